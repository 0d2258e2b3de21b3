//! The authenticated key exchange that opens a session (spec/02-crypto.md §5.1).
//!
//! Three messages, SIGMA-shaped, over a hybrid KEM (ML-KEM-768 + X25519):
//!
//! ```text
//! INIT    I → R : 1 | 1 | pk_I [1952] | fp_R [32] | ephemeral KEM pk [1216] | random [32]
//! ACCEPT  R → I : 1 | 2 | pk_R [1952] | KEM ciphertext [1120] | sig_R [3309]
//! FINISH  I → R : 1 | 3 | sig_I [3309]
//! ```
//! `sig_R` covers INIT ‖ ACCEPT-before-signature, `sig_I` covers INIT ‖ ACCEPT, each under
//! its own domain; both fingerprints sit in the signed transcript. Keys come from
//! HKDF-SHA256(salt = SHA-256(domain ‖ INIT ‖ ACCEPT), ikm = KEM shared key).
//!
//! The types carry the protocol: an [`Initiator`] is consumed by the ACCEPT it receives, a
//! [`Responder`] by the FINISH; a [`Session`] exists only after the peer's signature
//! verified. Sans-IO: messages are byte vectors the caller carries.

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};

use super::identity::{PublicKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use super::kem::{KemKeyPair, KemPublicKey, SharedKey, KEM_CIPHERTEXT_LEN, KEM_PUBLIC_KEY_LEN};
use super::{Fingerprint, Identity, KexError, Session};

const VERSION: u8 = 1;
const KIND_INIT: u8 = 1;
const KIND_ACCEPT: u8 = 2;
const KIND_FINISH: u8 = 3;

/// Length of INIT.
pub const INIT_LEN: usize = 2 + PUBLIC_KEY_LEN + 32 + KEM_PUBLIC_KEY_LEN + 32;
/// Length of ACCEPT.
pub const ACCEPT_LEN: usize = ACCEPT_SIGNED_LEN + SIGNATURE_LEN;
const ACCEPT_SIGNED_LEN: usize = 2 + PUBLIC_KEY_LEN + KEM_CIPHERTEXT_LEN;
/// Length of FINISH.
pub const FINISH_LEN: usize = 2 + SIGNATURE_LEN;

const DOMAIN_RESPONDER: &[u8] = b"dna/kex/v1/responder";
const DOMAIN_INITIATOR: &[u8] = b"dna/kex/v1/initiator";
const DOMAIN_TRANSCRIPT: &[u8] = b"dna/kex/v1/transcript";

fn check(msg: &[u8], kind: u8, len: usize) -> Result<(), KexError> {
    match msg {
        [v, ..] if *v != VERSION => Err(KexError::UnsupportedVersion { found: *v }),
        [_, k, ..] if *k != kind => Err(KexError::UnexpectedMessage {
            expected: kind,
            found: *k,
        }),
        _ if msg.len() != len => Err(KexError::BadLength {
            kind,
            expected: len,
            found: msg.len(),
        }),
        _ => Ok(()),
    }
}

fn transcript(init: &[u8], accept: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN_TRANSCRIPT);
    h.update(init);
    h.update(accept);
    h.finalize().into()
}

/// The dialing side, waiting for ACCEPT.
pub struct Initiator {
    local: Fingerprint,
    peer: Fingerprint,
    ephemeral: KemKeyPair,
    init: Vec<u8>,
}

impl Initiator {
    /// Starts a key exchange with the peer whose fingerprint is `peer`. Returns the state
    /// and the INIT message to send.
    pub fn start(
        identity: &Identity,
        peer: Fingerprint,
        rng: &mut impl CryptoRngCore,
    ) -> (Initiator, Vec<u8>) {
        let ephemeral = KemKeyPair::generate(rng);
        let mut random = [0u8; 32];
        rng.fill_bytes(&mut random);
        let mut init = Vec::with_capacity(INIT_LEN);
        init.extend_from_slice(&[VERSION, KIND_INIT]);
        init.extend_from_slice(identity.public_key().as_bytes());
        init.extend_from_slice(&peer.0);
        init.extend_from_slice(&ephemeral.public().to_bytes());
        init.extend_from_slice(&random);
        let state = Initiator {
            local: identity.fingerprint(),
            peer,
            ephemeral,
            init: init.clone(),
        };
        (state, init)
    }

    /// Handles ACCEPT: checks the responder is the expected peer and its signature, derives
    /// the session. Returns it and the FINISH message to send.
    pub fn on_accept(
        self,
        identity: &Identity,
        accept: &[u8],
    ) -> Result<(Session, Vec<u8>), KexError> {
        check(accept, KIND_ACCEPT, ACCEPT_LEN)?;
        let pk_end = 2 + PUBLIC_KEY_LEN;
        let responder = PublicKey::from_bytes(&accept[2..pk_end]).map_err(|_| KexError::BadKey)?;
        if responder.fingerprint() != self.peer {
            return Err(KexError::UnexpectedPeer {
                expected: self.peer,
                found: responder.fingerprint(),
            });
        }
        let (signed, sig) = accept.split_at(ACCEPT_SIGNED_LEN);
        responder
            .verify(DOMAIN_RESPONDER, &[&self.init, signed], sig)
            .map_err(|_| KexError::BadSignature)?;
        let mut ct = [0u8; KEM_CIPHERTEXT_LEN];
        ct.copy_from_slice(&accept[pk_end..ACCEPT_SIGNED_LEN]);
        let shared = self.ephemeral.decapsulate(&ct)?;
        let mut finish = Vec::with_capacity(FINISH_LEN);
        finish.extend_from_slice(&[VERSION, KIND_FINISH]);
        finish.extend_from_slice(&identity.sign(DOMAIN_INITIATOR, &[&self.init, accept]));
        let th = transcript(&self.init, accept);
        Ok((
            Session::derive(self.local, self.peer, true, &shared, &th)?,
            finish,
        ))
    }
}

/// The answering side, waiting for FINISH.
pub struct Responder {
    local: Fingerprint,
    peer: PublicKey,
    init: Vec<u8>,
    accept: Vec<u8>,
    shared: SharedKey,
}

impl Responder {
    /// Handles INIT. `expected_peer` is the fingerprint the transport already authenticated,
    /// if any. Returns the state and the ACCEPT message to send.
    pub fn on_init(
        identity: &Identity,
        init: &[u8],
        expected_peer: Option<Fingerprint>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Responder, Vec<u8>), KexError> {
        check(init, KIND_INIT, INIT_LEN)?;
        let pk_end = 2 + PUBLIC_KEY_LEN;
        let peer = PublicKey::from_bytes(&init[2..pk_end]).map_err(|_| KexError::BadKey)?;
        if let Some(expected) = expected_peer {
            if peer.fingerprint() != expected {
                return Err(KexError::UnexpectedPeer {
                    expected,
                    found: peer.fingerprint(),
                });
            }
        }
        let mut named = [0u8; 32];
        named.copy_from_slice(&init[pk_end..pk_end + 32]);
        if Fingerprint(named) != identity.fingerprint() {
            return Err(KexError::WrongRecipient {
                found: Fingerprint(named),
            });
        }
        let kem_at = pk_end + 32;
        let eph = KemPublicKey::from_bytes(&init[kem_at..kem_at + KEM_PUBLIC_KEY_LEN])
            .map_err(|_| KexError::BadKey)?;
        let (shared, ct) = eph.encapsulate(rng)?;
        let mut accept = Vec::with_capacity(ACCEPT_LEN);
        accept.extend_from_slice(&[VERSION, KIND_ACCEPT]);
        accept.extend_from_slice(identity.public_key().as_bytes());
        accept.extend_from_slice(&ct);
        let sig = identity.sign(DOMAIN_RESPONDER, &[init, &accept]);
        accept.extend_from_slice(&sig);
        let state = Responder {
            local: identity.fingerprint(),
            peer,
            init: init.to_vec(),
            accept: accept.clone(),
            shared,
        };
        Ok((state, accept))
    }

    /// The initiator's fingerprint (not yet proven until FINISH verifies).
    pub fn claimed_peer(&self) -> Fingerprint {
        self.peer.fingerprint()
    }

    /// Handles FINISH: verifies the initiator's signature over the transcript and returns
    /// the session.
    pub fn on_finish(self, finish: &[u8]) -> Result<Session, KexError> {
        check(finish, KIND_FINISH, FINISH_LEN)?;
        self.peer
            .verify(DOMAIN_INITIATOR, &[&self.init, &self.accept], &finish[2..])
            .map_err(|_| KexError::BadSignature)?;
        let th = transcript(&self.init, &self.accept);
        Ok(Session::derive(
            self.local,
            self.peer.fingerprint(),
            false,
            &self.shared,
            &th,
        )?)
    }
}
