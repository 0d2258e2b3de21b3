//! The identity key file in the data directory (spec/02-crypto.md §2.2).
//!
//! ```text
//! "DNAKEY01" [8] | Dilithium3 pk [1952] | Dilithium3 sk [4032] | KEM pk [1216]
//!   | ML-KEM-768 sk [2400] | X25519 sk [32] | SHA-256 of all preceding bytes [32]
//! ```
//! Created once with mode 0600 (directory 0700), written to a temporary file and linked
//! into place so an existing identity is never overwritten. Loading refuses a file of the
//! wrong size, magic or checksum, keys that do not pair up, and permissions that let
//! anyone else read it: a damaged identity is an error to fix, never silently replaced.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use super::identity::{IdentityPartsError, PUBLIC_KEY_LEN, SECRET_KEY_LEN};
use super::kem::{KemKeyPair, KEM_PUBLIC_KEY_LEN, MLKEM_SECRET_KEY_LEN};
use super::Identity;

/// File name of the identity inside the data directory.
pub const KEY_FILE_NAME: &str = "identity.key";
const MAGIC: &[u8; 8] = b"DNAKEY01";
/// Exact size of a key file.
pub const KEY_FILE_LEN: usize =
    8 + PUBLIC_KEY_LEN + SECRET_KEY_LEN + KEM_PUBLIC_KEY_LEN + MLKEM_SECRET_KEY_LEN + 32 + 32;

/// Why the identity could not be created or loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityFileError {
    /// No identity in this directory yet.
    #[error("no identity at {path} (create one with `dna id new`)")]
    NotFound {
        /// The key file path.
        path: PathBuf,
    },
    /// Refusing to overwrite an existing identity.
    #[error("an identity already exists at {path}; refusing to overwrite it")]
    AlreadyExists {
        /// The key file path.
        path: PathBuf,
    },
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Truncated or padded file.
    #[error("{path} is {found} bytes, an identity file is {expected}: the file is truncated or corrupted")]
    WrongSize {
        /// The key file path.
        path: PathBuf,
        /// Required size.
        expected: usize,
        /// Actual size.
        found: u64,
    },
    /// Not an identity file.
    #[error("{path} is not a dna identity file (bad magic)")]
    BadMagic {
        /// The key file path.
        path: PathBuf,
    },
    /// The checksum does not match: the file is corrupted.
    #[error("{path} is corrupted (checksum mismatch)")]
    ChecksumMismatch {
        /// The key file path.
        path: PathBuf,
    },
    /// The keys in the file do not form an identity.
    #[error("{path}: {source}")]
    InvalidKeys {
        /// The key file path.
        path: PathBuf,
        /// What is wrong.
        source: IdentityPartsError,
    },
    /// Group or others may access the file.
    #[error("{path} has mode {mode:o}; an identity must be private (chmod 600)")]
    InsecurePermissions {
        /// The key file path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityFileError + '_ {
    move |source| IdentityFileError::Io {
        path: path.to_owned(),
        source,
    }
}

fn encode(identity: &Identity) -> Zeroizing<Vec<u8>> {
    let kem = identity.kem_pair();
    let mut v = Zeroizing::new(Vec::with_capacity(KEY_FILE_LEN));
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(identity.public_key().as_bytes());
    v.extend_from_slice(identity.secret_bytes());
    v.extend_from_slice(&kem.public().to_bytes());
    v.extend_from_slice(kem.mlkem_secret_bytes());
    v.extend_from_slice(&kem.x25519_secret_bytes()[..]);
    let sum = Sha256::digest(&v[..]);
    v.extend_from_slice(&sum);
    v
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Identity, IdentityFileError> {
    if bytes.len() != KEY_FILE_LEN {
        return Err(IdentityFileError::WrongSize {
            path: path.to_owned(),
            expected: KEY_FILE_LEN,
            found: bytes.len() as u64,
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(IdentityFileError::BadMagic {
            path: path.to_owned(),
        });
    }
    let (body, sum) = bytes.split_at(KEY_FILE_LEN - 32);
    if Sha256::digest(body)[..] != sum[..] {
        return Err(IdentityFileError::ChecksumMismatch {
            path: path.to_owned(),
        });
    }
    let mut at = 8;
    let mut take = |n: usize| {
        let s = &body[at..at + n];
        at += n;
        s
    };
    let pk = take(PUBLIC_KEY_LEN);
    let sk = take(SECRET_KEY_LEN);
    let kem_pk = take(KEM_PUBLIC_KEY_LEN);
    let mlkem_sk = take(MLKEM_SECRET_KEY_LEN);
    let mut x = [0u8; 32];
    x.copy_from_slice(take(32));
    let invalid = |source: IdentityPartsError| IdentityFileError::InvalidKeys {
        path: path.to_owned(),
        source,
    };
    let kem = KemKeyPair::from_parts(kem_pk, mlkem_sk, x).map_err(|e| invalid(e.into()))?;
    Identity::from_parts(pk, sk, kem).map_err(invalid)
}

impl Identity {
    /// The identity in the key file's form (secret: keep it private), for a secondary
    /// identity handed to others, such as a contact drop (spec/09-mailbox.md §1.1).
    pub(crate) fn to_key_bytes(&self) -> Zeroizing<Vec<u8>> {
        encode(self)
    }

    /// An identity from [`Identity::to_key_bytes`]; `what` names it in errors.
    pub(crate) fn from_key_bytes(what: &Path, bytes: &[u8]) -> Result<Identity, IdentityFileError> {
        decode(what, bytes)
    }

    /// The key file path inside `data_dir`.
    pub fn key_file(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE_NAME)
    }

    /// Generates an identity and stores it in `data_dir` (created 0700 if missing). Fails if
    /// one exists already.
    pub fn create_in(
        data_dir: &Path,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Identity, IdentityFileError> {
        let path = Self::key_file(data_dir);
        if path.exists() {
            return Err(IdentityFileError::AlreadyExists { path });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io_err(data_dir))?;
        let identity = Identity::generate(rng);
        let tmp = data_dir.join(format!(".{KEY_FILE_NAME}.{}.tmp", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&encode(&identity))?;
            f.sync_all()
        };
        let linked = write().and_then(|()| fs::hard_link(&tmp, &path));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(identity),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(IdentityFileError::AlreadyExists { path })
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Loads the identity stored in `data_dir`.
    pub fn load_from(data_dir: &Path) -> Result<Identity, IdentityFileError> {
        let path = Self::key_file(data_dir);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IdentityFileError::NotFound { path })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityFileError::InsecurePermissions { path, mode });
        }
        if meta.len() != KEY_FILE_LEN as u64 {
            return Err(IdentityFileError::WrongSize {
                path,
                expected: KEY_FILE_LEN,
                found: meta.len(),
            });
        }
        let bytes = Zeroizing::new(fs::read(&path).map_err(io_err(&path))?);
        decode(&path, &bytes)
    }

    /// Loads the identity in `data_dir`, creating one only if there is none. Returns it and
    /// whether it was created. A damaged identity is an error, never replaced.
    pub fn load_or_create(
        data_dir: &Path,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Identity, bool), IdentityFileError> {
        match Self::load_from(data_dir) {
            Ok(id) => Ok((id, false)),
            Err(IdentityFileError::NotFound { .. }) => Ok((Self::create_in(data_dir, rng)?, true)),
            Err(e) => Err(e),
        }
    }
}
