//! Compares the two ChaCha20-Poly1305 implementations on this machine: RustCrypto's
//! `chacha20poly1305` and ring's. Same algorithm (RFC 8439), same bytes on the wire.
//! `cargo run --release --example aead_compare`
#![allow(clippy::disallowed_methods)] // measures wall time

use std::hint::black_box;
use std::time::Instant;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

fn main() {
    let key = [7u8; 32];
    let rc = ChaCha20Poly1305::new((&key).into());
    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key).unwrap(),
    );
    for size in [256usize, 65536] {
        let iters = if size == 256 { 400_000 } else { 4_000 };
        let mut buf = vec![1u8; size];
        let t = Instant::now();
        for i in 0..iters as u64 {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&i.to_be_bytes());
            black_box(
                rc.encrypt_in_place_detached((&n).into(), b"aad", &mut buf)
                    .unwrap(),
            );
        }
        let rust_crypto = iters as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..iters as u64 {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&i.to_be_bytes());
            let nonce = ring::aead::Nonce::assume_unique_for_key(n);
            let _ = black_box(
                ring_key
                    .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(b"aad"), &mut buf)
                    .unwrap(),
            );
        }
        let ring_rate = iters as f64 / t.elapsed().as_secs_f64();
        println!(
            "{size:>6} B: RustCrypto {:>9.0}/s ({:>5.0} MiB/s)  ring {:>9.0}/s ({:>5.0} MiB/s)  ring/RustCrypto {:.2}",
            rust_crypto,
            rust_crypto * size as f64 / 1048576.0,
            ring_rate,
            ring_rate * size as f64 / 1048576.0,
            ring_rate / rust_crypto
        );
    }
}
