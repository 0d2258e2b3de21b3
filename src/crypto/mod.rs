//! Identity and end-to-end protection (spec/02-crypto.md).
//!
//! * [`Identity`]: a Dilithium3 signing key pair (the user's ID is its [`Fingerprint`]) plus
//!   a hybrid ML-KEM-768 + X25519 key pair for sealing; stored in the data directory.
//! * Session form ([`kex`], [`Session`]): a signed hybrid-KEM key exchange once per session,
//!   then one ChaCha20-Poly1305 AEAD per message with a counter nonce.
//! * Sealed form ([`sealed`]): for the offline mailbox, sealed to the recipient's published
//!   KEM key and signed by the sender.
//! * [`Record`]: signed, self-certifying DHT records.
//!
//! Sans-IO: callers pass the RNG and the time; pqcrypto's key generation and encapsulation
//! draw their own randomness from the OS inside the C implementation.

mod aead;
pub mod drop;
mod error;
mod fingerprint;
mod identity;
mod kem;
pub mod kex;
mod keyfile;
mod message;
pub mod name;
pub mod receipt;
pub mod record;
pub mod sealed;
mod session;
pub mod stream;

pub use aead::KeySetupError;
pub use error::{KexError, OpenError, SealError};
pub use fingerprint::{Fingerprint, NodeId, ParseFingerprintError, FINGERPRINT_LEN, NODE_ID_LEN};
pub use identity::{
    BadSignature, Identity, IdentityPartsError, PublicKey, PUBLIC_KEY_LEN, SECRET_KEY_LEN,
    SIGNATURE_LEN,
};
pub use kem::{
    KemKeyPair, KemPublicKey, KeyLengthError, NonContributory, KEM_CIPHERTEXT_LEN,
    KEM_PUBLIC_KEY_LEN,
};
pub use keyfile::{IdentityFileError, KEY_FILE_LEN, KEY_FILE_NAME};
pub(crate) use message::{
    encode as encode_plaintext, parse_slice as parse_plaintext_slice,
    parse_vec as parse_plaintext_vec,
};
pub use message::{Message, MessageId, MessageKind, MESSAGE_HEADER_LEN};
pub use record::{Record, RecordError, RecordKind};
pub use session::{Session, FORM_SEALED, FORM_SESSION, SESSION_OVERHEAD};

#[cfg(test)]
mod tests;
