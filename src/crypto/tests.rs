//! Tests of identity, key exchange, both message forms and records. Every `OpenError`,
//! `KexError` and `RecordError` a peer can cause has a test here.

use bytes::BytesMut;
use rand_core::OsRng;

use super::kex::{Initiator, Responder};
use super::*;

struct Pair {
    alice: Identity,
    bob: Identity,
}

fn pair() -> Pair {
    Pair {
        alice: Identity::generate(&mut OsRng),
        bob: Identity::generate(&mut OsRng),
    }
}

/// Runs the key exchange; returns (alice's session, bob's session).
fn handshake(p: &Pair) -> (Session, Session) {
    let (i, init) = Initiator::start(&p.alice, p.bob.fingerprint(), &mut OsRng);
    let (r, accept) =
        Responder::on_init(&p.bob, &init, Some(p.alice.fingerprint()), &mut OsRng).unwrap();
    let (a, finish) = i.on_accept(&p.alice, &accept).unwrap();
    let b = r.on_finish(&finish).unwrap();
    (a, b)
}

/// A sealed envelope from Alice to Bob (ID 1…1, timestamp 0).
fn alice_to_bob(p: &Pair, body: &[u8]) -> Vec<u8> {
    sealed::seal(
        &p.alice,
        p.bob.fingerprint(),
        p.bob.kem_public(),
        MessageId([1; 16]),
        0,
        crate::crypto::MessageKind::TEXT,
        body,
        &mut OsRng,
    )
    .unwrap()
}

fn seal(s: &mut Session, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    s.seal(
        MessageId::random(&mut OsRng),
        1_700_000_000_000,
        crate::crypto::MessageKind::TEXT,
        body,
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn fingerprint_is_sha256_of_the_public_key_and_node_id_its_prefix() {
    use sha2::{Digest, Sha256};
    let id = Identity::generate(&mut OsRng);
    let fp = id.fingerprint();
    assert_eq!(fp.0[..], Sha256::digest(id.public_key().as_bytes())[..]);
    assert_eq!(id.public_key().as_bytes().len(), PUBLIC_KEY_LEN);
    assert_eq!(fp.node_id().0[..], fp.0[..20]);
    let hex = fp.to_string();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(hex.parse::<Fingerprint>().unwrap(), fp);
}

#[test]
fn signature_is_domain_separated() {
    let id = Identity::generate(&mut OsRng);
    let sig = id.sign(b"dna/test/a", &[b"x"]);
    assert_eq!(sig.len(), SIGNATURE_LEN);
    assert!(id.public_key().verify(b"dna/test/a", &[b"x"], &sig).is_ok());
    assert_eq!(
        id.public_key().verify(b"dna/test/b", &[b"x"], &sig),
        Err(BadSignature)
    );
    assert_eq!(
        id.public_key().verify(b"dna/test/a", &[b"y"], &sig),
        Err(BadSignature)
    );
    assert_eq!(
        id.public_key().verify(b"dna/test/a", &[b"x"], &sig[1..]),
        Err(BadSignature)
    );
}

#[test]
fn key_exchange_gives_matching_directional_sessions() {
    let p = pair();
    let (mut a, mut b) = handshake(&p);
    assert_eq!(a.id(), b.id());
    assert_eq!(a.peer(), p.bob.fingerprint());
    assert_eq!(b.peer(), p.alice.fingerprint());
    for i in 0..5u8 {
        let m = b.open(seal(&mut a, &[i; 300])).unwrap();
        assert_eq!(&m.body[..], &[i; 300]);
        assert_eq!(m.sender, p.alice.fingerprint());
        assert_eq!(m.recipient, p.bob.fingerprint());
        let back = a.open(seal(&mut b, b"ack")).unwrap();
        assert_eq!(&back.body[..], b"ack");
    }
}

#[test]
fn key_exchange_refuses_an_impostor_responder() {
    let p = pair();
    let mallory = Identity::generate(&mut OsRng);
    let (i, init) = Initiator::start(&p.alice, p.bob.fingerprint(), &mut OsRng);
    // Mallory is not who INIT names.
    assert_eq!(
        Responder::on_init(&mallory, &init, None, &mut OsRng).err(),
        Some(KexError::WrongRecipient {
            found: p.bob.fingerprint()
        })
    );
    // Mallory answers with her own key anyway (rewriting the recipient field).
    let mut forged = init.clone();
    forged[2 + PUBLIC_KEY_LEN..2 + PUBLIC_KEY_LEN + 32].copy_from_slice(&mallory.fingerprint().0);
    let (_, accept) = Responder::on_init(&mallory, &forged, None, &mut OsRng).unwrap();
    assert_eq!(
        i.on_accept(&p.alice, &accept).err(),
        Some(KexError::UnexpectedPeer {
            expected: p.bob.fingerprint(),
            found: mallory.fingerprint()
        })
    );
}

#[test]
fn key_exchange_refuses_a_bad_responder_signature() {
    let p = pair();
    let (i, init) = Initiator::start(&p.alice, p.bob.fingerprint(), &mut OsRng);
    let (_, mut accept) = Responder::on_init(&p.bob, &init, None, &mut OsRng).unwrap();
    let last = accept.len() - 1;
    accept[last] ^= 1;
    assert_eq!(
        i.on_accept(&p.alice, &accept).err(),
        Some(KexError::BadSignature)
    );
}

#[test]
fn key_exchange_refuses_a_replayed_accept() {
    // An ACCEPT recorded from another handshake does not verify against a fresh INIT.
    let p = pair();
    let (_, init1) = Initiator::start(&p.alice, p.bob.fingerprint(), &mut OsRng);
    let (_, accept1) = Responder::on_init(&p.bob, &init1, None, &mut OsRng).unwrap();
    let (i2, _) = Initiator::start(&p.alice, p.bob.fingerprint(), &mut OsRng);
    assert_eq!(
        i2.on_accept(&p.alice, &accept1).err(),
        Some(KexError::BadSignature)
    );
}

#[test]
fn key_exchange_refuses_an_impostor_initiator() {
    let p = pair();
    let mallory = Identity::generate(&mut OsRng);
    let (_, init) = Initiator::start(&mallory, p.bob.fingerprint(), &mut OsRng);
    assert_eq!(
        Responder::on_init(&p.bob, &init, Some(p.alice.fingerprint()), &mut OsRng).err(),
        Some(KexError::UnexpectedPeer {
            expected: p.alice.fingerprint(),
            found: mallory.fingerprint()
        })
    );
    // FINISH signed by someone else.
    let (i, init) = Initiator::start(&p.alice, p.bob.fingerprint(), &mut OsRng);
    let (r, accept) = Responder::on_init(&p.bob, &init, None, &mut OsRng).unwrap();
    let (_, mut finish) = i.on_accept(&p.alice, &accept).unwrap();
    finish[10] ^= 0x40;
    assert_eq!(r.on_finish(&finish).err(), Some(KexError::BadSignature));
}

#[test]
fn key_exchange_messages_are_checked_for_shape() {
    let p = pair();
    let (_, init) = Initiator::start(&p.alice, p.bob.fingerprint(), &mut OsRng);
    let mut v = init.clone();
    v[0] = 9;
    assert_eq!(
        Responder::on_init(&p.bob, &v, None, &mut OsRng).err(),
        Some(KexError::UnsupportedVersion { found: 9 })
    );
    let mut k = init.clone();
    k[1] = 3;
    assert_eq!(
        Responder::on_init(&p.bob, &k, None, &mut OsRng).err(),
        Some(KexError::UnexpectedMessage {
            expected: 1,
            found: 3
        })
    );
    assert_eq!(
        Responder::on_init(&p.bob, &init[..100], None, &mut OsRng).err(),
        Some(KexError::BadLength {
            kind: 1,
            expected: kex::INIT_LEN,
            found: 100
        })
    );
    assert!(Responder::on_init(&p.bob, &[], None, &mut OsRng).is_err());
}

#[test]
fn session_detects_replay_and_reordering() {
    let p = pair();
    let (mut a, mut b) = handshake(&p);
    let m0 = seal(&mut a, b"zero");
    let m1 = seal(&mut a, b"one");
    let m2 = seal(&mut a, b"two");
    assert_eq!(
        b.open(m1.clone()).err(),
        Some(OpenError::OutOfOrder {
            counter: 1,
            expected: 0
        })
    );
    b.open(m0.clone()).unwrap();
    assert_eq!(
        b.open(m0).err(),
        Some(OpenError::ReplayedCounter {
            counter: 0,
            expected: 1
        })
    );
    b.open(m1).unwrap();
    assert_eq!(&b.open(m2).unwrap().body[..], b"two");
}

#[test]
fn session_detects_tampering_without_losing_its_place() {
    let p = pair();
    let (mut a, mut b) = handshake(&p);
    let good = seal(&mut a, b"hello");
    for at in [1usize, 9, 20, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        let err = b.open(bad).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::TamperedCiphertext
                    | OpenError::WrongForm { .. }
                    | OpenError::OutOfOrder { .. }
            ),
            "byte {at}: {err:?}"
        );
    }
    // The genuine message still opens: failures did not advance the counter.
    assert_eq!(&b.open(good).unwrap().body[..], b"hello");
}

#[test]
fn session_refuses_truncation_version_and_form() {
    let p = pair();
    let (mut a, mut b) = handshake(&p);
    let good = seal(&mut a, b"");
    assert_eq!(good.len(), SESSION_OVERHEAD);
    assert_eq!(
        b.open(BytesMut::from(&good[..50])).err(),
        Some(OpenError::Truncated {
            needed: SESSION_OVERHEAD,
            available: 50
        })
    );
    let mut v = good.clone();
    v[0] = 2;
    assert_eq!(
        b.open(v).err(),
        Some(OpenError::UnsupportedVersion { found: 2 })
    );
    let mut f = good.clone();
    f[1] = FORM_SEALED;
    assert_eq!(
        b.open(f).err(),
        Some(OpenError::WrongForm {
            expected: FORM_SESSION,
            found: FORM_SEALED
        })
    );
}

#[test]
fn session_keys_are_bound_to_the_session() {
    // A message from one session does not open in another session between the same pair.
    let p = pair();
    let (mut a1, _) = handshake(&p);
    let (_, mut b2) = handshake(&p);
    assert_eq!(
        b2.open(seal(&mut a1, b"x")).err(),
        Some(OpenError::TamperedCiphertext)
    );
}

#[test]
fn sealed_round_trip() {
    let p = pair();
    let id = MessageId::random(&mut OsRng);
    let env = sealed::seal(
        &p.alice,
        p.bob.fingerprint(),
        p.bob.kem_public(),
        id,
        42,
        crate::crypto::MessageKind::TEXT,
        b"offline hi",
        &mut OsRng,
    )
    .unwrap();
    assert_eq!(env.len(), sealed::SEALED_OVERHEAD + 10);
    let header = sealed::verify_sender(&env).unwrap();
    assert_eq!(header.sender.fingerprint(), p.alice.fingerprint());
    assert_eq!(header.recipient, p.bob.fingerprint());
    let (m, sender) = sealed::open(&p.bob, &env).unwrap();
    assert_eq!(sender.fingerprint(), p.alice.fingerprint());
    assert_eq!(
        (m.id, m.timestamp_ms, &m.body[..]),
        (id, 42, &b"offline hi"[..])
    );
}

#[test]
fn sealed_refuses_the_wrong_recipient() {
    let p = pair();
    let carol = Identity::generate(&mut OsRng);
    let env = alice_to_bob(&p, b"x");
    assert_eq!(
        sealed::open(&carol, &env).err(),
        Some(OpenError::WrongRecipient {
            expected: carol.fingerprint(),
            found: p.bob.fingerprint()
        })
    );
}

#[test]
fn sealed_refuses_a_bad_signature() {
    let p = pair();
    let mut env = alice_to_bob(&p, b"x");
    let at = env.len() - 200;
    env[at] ^= 1;
    assert_eq!(
        sealed::open(&p.bob, &env).err(),
        Some(OpenError::BadSignature)
    );
    assert_eq!(
        sealed::verify_sender(&env).err(),
        Some(OpenError::BadSignature)
    );
}

#[test]
fn sealed_refuses_tampered_ciphertext_even_when_re_signed() {
    // The sender itself alters the ciphertext and signs again: the AEAD catches it.
    let p = pair();
    let env = alice_to_bob(&p, b"body");
    let mut body = env[..env.len() - SIGNATURE_LEN].to_vec();
    let at = body.len() - 20;
    body[at] ^= 1;
    let sig = p.alice.sign(sealed::DOMAIN_SIGNATURE, &[&body]);
    body.extend_from_slice(&sig);
    assert_eq!(
        sealed::open(&p.bob, &body).err(),
        Some(OpenError::TamperedCiphertext)
    );
}

#[test]
fn sealed_refuses_a_sender_swap() {
    // Mallory replaces the sender key and signs: the plaintext still names Alice.
    let p = pair();
    let mallory = Identity::generate(&mut OsRng);
    let env = alice_to_bob(&p, b"body");
    let mut body = env[..env.len() - SIGNATURE_LEN].to_vec();
    body[2..2 + PUBLIC_KEY_LEN].copy_from_slice(mallory.public_key().as_bytes());
    let sig = mallory.sign(sealed::DOMAIN_SIGNATURE, &[&body]);
    body.extend_from_slice(&sig);
    // The prefix is the AEAD's associated data, so the swap breaks the tag.
    assert_eq!(
        sealed::open(&p.bob, &body).err(),
        Some(OpenError::TamperedCiphertext)
    );
}

#[test]
fn sealed_refuses_truncation_and_wrong_form() {
    let p = pair();
    let env = alice_to_bob(&p, b"");
    assert!(matches!(
        sealed::open(&p.bob, &env[..100]),
        Err(OpenError::Truncated { .. })
    ));
    let mut f = env.clone();
    f[1] = FORM_SESSION;
    assert_eq!(
        sealed::open(&p.bob, &f).err(),
        Some(OpenError::WrongForm {
            expected: FORM_SEALED,
            found: FORM_SESSION
        })
    );
}

mod records {
    use super::*;
    use crate::crypto::record::{self, RECORD_HEADER_LEN};

    const NOW: u64 = 1_800_000_000;

    fn presence(id: &Identity, seq: u64) -> Record {
        Record::sign(
            id,
            RecordKind::Presence,
            seq,
            NOW + 600,
            b"addrs".to_vec(),
            NOW,
        )
        .unwrap()
    }

    /// Re-signs raw record bytes (everything before the signature) with `id`.
    fn resign(id: &Identity, mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.truncate(bytes.len() - SIGNATURE_LEN);
        let sig = id.sign(record::DOMAIN, &[&bytes]);
        bytes.extend_from_slice(&sig);
        bytes
    }

    #[test]
    fn presence_round_trip_under_the_derived_key() {
        let id = Identity::generate(&mut OsRng);
        let r = presence(&id, 7);
        assert_eq!(r.key(), record::presence_key(&id.fingerprint()));
        let bytes = r.encode();
        let v = Record::verify(&bytes, NOW).unwrap();
        assert_eq!(v, r);
        assert_eq!(
            (v.seq(), v.value(), v.kind()),
            (7, &b"addrs"[..], RecordKind::Presence)
        );
    }

    #[test]
    fn forged_record_is_rejected() {
        let id = Identity::generate(&mut OsRng);
        let mut bytes = presence(&id, 1).encode();
        bytes[RECORD_HEADER_LEN] ^= 1; // change the value
        assert_eq!(
            Record::verify(&bytes, NOW).err(),
            Some(RecordError::BadSignature)
        );
        let mut bytes = presence(&id, 1).encode();
        bytes[25] ^= 1; // change the sequence number
        assert_eq!(
            Record::verify(&bytes, NOW).err(),
            Some(RecordError::BadSignature)
        );
    }

    #[test]
    fn record_under_someone_elses_key_is_rejected() {
        let alice = Identity::generate(&mut OsRng);
        let bob = Identity::generate(&mut OsRng);
        // Mallory-Alice writes a presence record under Bob's key, correctly signed by herself.
        let mut bytes = presence(&alice, 1).encode();
        bytes[2..22].copy_from_slice(&record::presence_key(&bob.fingerprint()).0);
        let bytes = resign(&alice, bytes);
        assert_eq!(
            Record::verify(&bytes, NOW).err(),
            Some(RecordError::KeyMismatch {
                expected: record::presence_key(&alice.fingerprint()),
                found: record::presence_key(&bob.fingerprint()),
            })
        );
        // Or replaces the publisher key with Bob's, keeping her own signature.
        let mut bytes = presence(&alice, 1).encode();
        bytes[38..38 + PUBLIC_KEY_LEN].copy_from_slice(bob.public_key().as_bytes());
        bytes[2..22].copy_from_slice(&record::presence_key(&bob.fingerprint()).0);
        assert_eq!(
            Record::verify(&bytes, NOW).err(),
            Some(RecordError::BadSignature)
        );
    }

    #[test]
    fn oversized_record_is_rejected_before_reading_the_value() {
        let id = Identity::generate(&mut OsRng);
        let max = RecordKind::Presence.max_value_len();
        assert_eq!(
            Record::sign(
                &id,
                RecordKind::Presence,
                1,
                NOW + 60,
                vec![0; max + 1],
                NOW
            )
            .err(),
            Some(RecordError::ValueTooLarge {
                kind: RecordKind::Presence,
                length: max + 1,
                max
            })
        );
        // Declared length over the limit, with no value bytes at all behind it.
        let mut bytes = presence(&id, 1).encode();
        bytes[1990..1994].copy_from_slice(&(u32::MAX).to_be_bytes());
        assert_eq!(
            Record::verify(&bytes, NOW).err(),
            Some(RecordError::ValueTooLarge {
                kind: RecordKind::Presence,
                length: u32::MAX as usize,
                max
            })
        );
    }

    #[test]
    fn expiry_is_checked() {
        let id = Identity::generate(&mut OsRng);
        let bytes = presence(&id, 1).encode();
        assert_eq!(
            Record::verify(&bytes, NOW + 600).err(),
            Some(RecordError::Expired {
                expiry: NOW + 600,
                now: NOW + 600
            })
        );
        let ttl = RecordKind::Presence.max_ttl_secs();
        assert_eq!(
            Record::sign(&id, RecordKind::Presence, 1, NOW + ttl + 1, vec![], NOW).err(),
            Some(RecordError::ExpiryTooFar {
                expiry: NOW + ttl + 1,
                max: NOW + ttl
            })
        );
    }

    #[test]
    fn structure_errors() {
        let id = Identity::generate(&mut OsRng);
        let bytes = presence(&id, 1).encode();
        assert!(matches!(
            Record::verify(&bytes[..100], NOW),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            Record::verify(&bytes[..bytes.len() - 1], NOW),
            Err(RecordError::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Record::verify(&long, NOW).err(),
            Some(RecordError::TrailingBytes { count: 1 })
        );
        let mut v = bytes.clone();
        v[0] = 2;
        assert_eq!(
            Record::verify(&v, NOW).err(),
            Some(RecordError::UnsupportedVersion { found: 2 })
        );
        let mut k = bytes.clone();
        k[1] = 99;
        assert_eq!(
            Record::verify(&k, NOW).err(),
            Some(RecordError::UnknownKind { found: 99 })
        );
    }

    #[test]
    fn kem_key_record_carries_a_valid_kem_key() {
        let id = Identity::generate(&mut OsRng);
        let r = Record::sign(
            &id,
            RecordKind::KemKey,
            1,
            NOW + 60,
            id.kem_public().to_bytes(),
            NOW,
        )
        .unwrap();
        let v = Record::verify(&r.encode(), NOW).unwrap();
        assert_eq!(
            &KemPublicKey::from_bytes(v.value()).unwrap(),
            id.kem_public()
        );
        assert!(matches!(
            Record::sign(&id, RecordKind::KemKey, 1, NOW + 60, vec![1; 10], NOW),
            Err(RecordError::InvalidValue {
                kind: RecordKind::KemKey,
                ..
            })
        ));
    }

    /// A claim value: claim time and name bytes, unchecked.
    fn claim(name: &str) -> Vec<u8> {
        let mut v = NOW.to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v
    }

    #[test]
    fn name_claims_are_keyed_by_name() {
        let id = Identity::generate(&mut OsRng);
        let r = Record::sign(&id, RecordKind::NameClaim, 1, NOW + 60, claim("bob"), NOW).unwrap();
        assert_eq!(r.key(), record::name_key("bob"));
        let bare = b"bob".to_vec();
        for bad in [
            claim(""),
            claim("Bob"),
            claim("a b"),
            claim(&"a".repeat(33)),
            bare,
        ] {
            assert!(matches!(
                Record::sign(&id, RecordKind::NameClaim, 1, NOW + 60, bad, NOW),
                Err(RecordError::InvalidValue { .. }) | Err(RecordError::ValueTooLarge { .. })
            ));
        }
    }

    #[test]
    fn mailbox_items_are_keyed_by_recipient_and_bound_to_the_sender() {
        let p = pair();
        let env = sealed::seal(
            &p.alice,
            p.bob.fingerprint(),
            p.bob.kem_public(),
            MessageId([3; 16]),
            0,
            crate::crypto::MessageKind::TEXT,
            b"hi",
            &mut OsRng,
        )
        .unwrap();
        let r = Record::sign(
            &p.alice,
            RecordKind::MailboxItem,
            1,
            NOW + 60,
            env.clone(),
            NOW,
        )
        .unwrap();
        assert_eq!(r.key(), record::mailbox_key(&p.bob.fingerprint()));
        Record::verify(&r.encode(), NOW).unwrap();
        // Bob cannot publish an item that claims to come from Alice.
        assert!(matches!(
            Record::sign(&p.bob, RecordKind::MailboxItem, 1, NOW + 60, env, NOW),
            Err(RecordError::InvalidValue {
                kind: RecordKind::MailboxItem,
                ..
            })
        ));
    }
}

mod keyfile {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_then_load_gives_the_same_identity_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let created = Identity::create_in(&data, &mut OsRng).unwrap();
        let path = Identity::key_file(&data);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), KEY_FILE_LEN as u64);
        let loaded = Identity::load_from(&data).unwrap();
        assert_eq!(loaded.fingerprint(), created.fingerprint());
        assert_eq!(loaded.kem_public(), created.kem_public());
        // The loaded key signs for the same public key.
        let sig = loaded.sign(b"t", &[]);
        created.public_key().verify(b"t", &[], &sig).unwrap();
    }

    #[test]
    fn never_overwrites_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::create_in(dir.path(), &mut OsRng).unwrap();
        assert!(matches!(
            Identity::create_in(dir.path(), &mut OsRng),
            Err(IdentityFileError::AlreadyExists { .. })
        ));
        let (again, created) = Identity::load_or_create(dir.path(), &mut OsRng).unwrap();
        assert!(!created);
        assert_eq!(again.fingerprint(), first.fingerprint());
    }

    #[test]
    fn missing_identity_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Identity::load_from(dir.path()),
            Err(IdentityFileError::NotFound { .. })
        ));
    }

    #[test]
    fn truncated_file_is_a_clear_error_and_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        Identity::create_in(dir.path(), &mut OsRng).unwrap();
        let path = Identity::key_file(dir.path());
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..1000]).unwrap();
        assert!(matches!(
            Identity::load_from(dir.path()),
            Err(IdentityFileError::WrongSize {
                expected: KEY_FILE_LEN,
                found: 1000,
                ..
            })
        ));
        assert!(matches!(
            Identity::load_or_create(dir.path(), &mut OsRng),
            Err(IdentityFileError::WrongSize { .. })
        ));
        assert_eq!(
            fs::read(&path).unwrap().len(),
            1000,
            "the damaged file stays for the user to inspect"
        );
    }

    #[test]
    fn corrupted_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        Identity::create_in(dir.path(), &mut OsRng).unwrap();
        let path = Identity::key_file(dir.path());
        let good = fs::read(&path).unwrap();
        let mut bad = good.clone();
        bad[5000] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            Identity::load_from(dir.path()),
            Err(IdentityFileError::ChecksumMismatch { .. })
        ));
        let mut bad = good.clone();
        bad[0] = b'X';
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            Identity::load_from(dir.path()),
            Err(IdentityFileError::BadMagic { .. })
        ));
    }

    #[test]
    fn mismatched_keys_are_a_clear_error() {
        // A file whose checksum is right but whose public key belongs to another identity.
        let dir = tempfile::tempdir().unwrap();
        Identity::create_in(dir.path(), &mut OsRng).unwrap();
        let other = Identity::generate(&mut OsRng);
        let path = Identity::key_file(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[8..8 + PUBLIC_KEY_LEN].copy_from_slice(other.public_key().as_bytes());
        let n = bytes.len() - 32;
        use sha2::{Digest, Sha256};
        let sum = Sha256::digest(&bytes[..n]);
        bytes[n..].copy_from_slice(&sum);
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Identity::load_from(dir.path()),
            Err(IdentityFileError::InvalidKeys {
                source: IdentityPartsError::SigningPairMismatch,
                ..
            })
        ));
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Identity::create_in(dir.path(), &mut OsRng).unwrap();
        let path = Identity::key_file(dir.path());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load_from(dir.path()),
            Err(IdentityFileError::InsecurePermissions { mode: 0o644, .. })
        ));
    }
}

#[test]
fn opening_a_lent_envelope_agrees_with_opening_an_owned_one() {
    let p = pair();
    let (mut a, mut b) = handshake(&p);
    let mut opened = 0;
    for i in 0..6u8 {
        let good = seal(&mut a, &vec![i; 37 * i as usize]);
        // Tampered, truncated, replayed and reordered envelopes first, then the genuine one:
        // both ways give the same result and keep the same place.
        let mut cases = vec![BytesMut::from(&good[..good.len() / 2])];
        for at in [0usize, 1, 5, 12, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            cases.push(bad);
        }
        cases.push(good);
        for env in cases {
            let mut owned = b.clone();
            let by_owned = owned.open(env.clone());
            let by_slice = b.open_slice(&env);
            assert_eq!(by_slice, by_owned);
            opened += usize::from(by_slice.is_ok());
        }
    }
    println!("opened {opened} of 42 envelopes, the same way both ways");
    assert_eq!(opened, 6);
}

#[test]
fn the_kind_travels_inside_both_forms() {
    let p = pair();
    let kind = MessageKind(0x8001);
    let (mut a, mut b) = handshake(&p);
    let mut out = BytesMut::new();
    a.seal(MessageId([3; 16]), 9, kind, b"app", &mut out)
        .unwrap();
    let m = b.open(out).unwrap();
    assert_eq!((m.kind, &m.body[..]), (kind, &b"app"[..]));
    let env = sealed::seal(
        &p.alice,
        p.bob.fingerprint(),
        p.bob.kem_public(),
        MessageId([4; 16]),
        9,
        MessageKind::FILE,
        b"offline app",
        &mut OsRng,
    )
    .unwrap();
    let (m, _) = sealed::open(&p.bob, &env).unwrap();
    assert_eq!(
        (m.kind, &m.body[..]),
        (MessageKind::FILE, &b"offline app"[..])
    );
}
