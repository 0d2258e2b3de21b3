//! TURN credentials (spec/07-relay.md §2.4): the long-term credential mechanism of
//! RFC 8489 §9.2 as RFC 8656 §5 uses it, from a static user/password or from coturn's
//! time-limited "TURN REST API" scheme (`use-auth-secret`).
//!
//! In the REST scheme the server and the credential issuer share a secret; a credential is
//! `username = "<expiry unix seconds>:<user>"`, `password = base64(HMAC-SHA1(secret,
//! username))`, and the server refuses it once the expiry has passed. The key that
//! MESSAGE-INTEGRITY is computed with is MD5(username ":" realm ":" password) either way
//! (RFC 8489 §9.2.2); the realm comes from the server's first 401.

use std::time::Duration;

use base64::Engine as _;
use ring::hmac;

/// Where a TURN client's username and password come from.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A fixed user and password (coturn `--user USER:PASSWORD`).
    Static {
        /// USERNAME.
        username: String,
        /// The password.
        password: String,
    },
    /// coturn's `--use-auth-secret --static-auth-secret SECRET`: credentials computed from
    /// the shared secret, valid for `ttl` from the moment they are made.
    Rest {
        /// The shared secret.
        secret: String,
        /// The user part of the username (may be empty: the username is then the expiry).
        user: String,
        /// How long a computed credential stays valid.
        ttl: Duration,
    },
}

impl std::fmt::Debug for Credentials {
    // Never prints a password or a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Static { username, .. } => f
                .debug_struct("Static")
                .field("username", username)
                .finish_non_exhaustive(),
            Credentials::Rest { user, ttl, .. } => f
                .debug_struct("Rest")
                .field("user", user)
                .field("ttl", ttl)
                .finish_non_exhaustive(),
        }
    }
}

/// The default lifetime of a REST credential: one day, coturn's documented usual value.
pub const DEFAULT_REST_TTL: Duration = Duration::from_secs(86_400);

/// A username and password, ready to key MESSAGE-INTEGRITY once the realm is known.
#[derive(Clone, PartialEq, Eq)]
pub struct LongTerm {
    /// USERNAME.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for LongTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongTerm")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credential to use at wall-clock time `unix_secs` (seconds since 1970): the static
    /// pair, or a REST credential expiring at `unix_secs + ttl`.
    pub fn at(&self, unix_secs: u64) -> LongTerm {
        match self {
            Credentials::Static { username, password } => LongTerm {
                username: username.clone(),
                password: password.clone(),
            },
            Credentials::Rest { secret, user, ttl } => {
                rest_credential(secret, user, unix_secs.saturating_add(ttl.as_secs()))
            }
        }
    }
}

/// The REST credential for `user` that expires at `expiry` (unix seconds).
pub fn rest_credential(secret: &str, user: &str, expiry: u64) -> LongTerm {
    let username = if user.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{user}")
    };
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    LongTerm { username, password }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credential_matches_a_known_value() {
        // Computed independently: printf '1700000000:alice' |
        //   openssl dgst -sha1 -hmac 'north' -binary | base64
        let c = rest_credential("north", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.password, KNOWN);
    }

    const KNOWN: &str = "Cd/49soE35ICqcJF/bCTn8Z4OyE=";

    #[test]
    fn rest_expiry_is_now_plus_ttl_and_debug_hides_secrets() {
        let c = Credentials::Rest {
            secret: "s3cret".into(),
            user: "bob".into(),
            ttl: Duration::from_secs(60),
        };
        assert_eq!(c.at(1000).username, "1060:bob");
        assert!(!format!("{c:?}").contains("s3cret"));
        let s = Credentials::Static {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert_eq!(s.at(5).password, "hunter2");
        assert!(!format!("{s:?} {:?}", s.at(5)).contains("hunter2"));
        assert_eq!(rest_credential("k", "", 7).username, "7");
    }
}
