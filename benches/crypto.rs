//! Crypto costs: Dilithium3 sign/verify per second, key exchanges per second, session-form
//! seal/open throughput (256 B and 64 KiB) and sealed-form seal/open per second. Ends with
//! `RESULT key=value` lines measured in this run.
#![allow(clippy::disallowed_methods)] // a benchmark is a driver: it reads the clock.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use dna_p2p::crypto::kex::{Initiator, Responder};
use dna_p2p::crypto::{sealed, Identity, MessageId, Session};
use rand_core::OsRng;

fn sessions(a: &Identity, b: &Identity) -> (Session, Session) {
    let (i, init) = Initiator::start(a, b.fingerprint(), &mut OsRng);
    let (r, accept) = Responder::on_init(b, &init, None, &mut OsRng).unwrap();
    let (sa, finish) = i.on_accept(a, &accept).unwrap();
    (sa, r.on_finish(&finish).unwrap())
}

fn seal_open(a: &mut Session, b: &mut Session, body: &[u8], buf: &mut BytesMut) {
    buf.clear();
    a.seal(
        MessageId([1; 16]),
        0,
        dna_p2p::crypto::MessageKind::TEXT,
        body,
        buf,
    )
    .unwrap();
    let env = buf.split();
    black_box(b.open(env).unwrap());
}

fn bench(c: &mut Criterion) {
    let alice = Identity::generate(&mut OsRng);
    let bob = Identity::generate(&mut OsRng);

    let mut g = c.benchmark_group("dilithium3");
    g.throughput(Throughput::Elements(1));
    let sig = alice.sign(b"bench", &[b"msg"]);
    g.bench_function("sign", |b| {
        b.iter(|| black_box(alice.sign(b"bench", &[b"msg"])))
    });
    g.bench_function("verify", |b| {
        b.iter(|| {
            alice
                .public_key()
                .verify(b"bench", &[b"msg"], &sig)
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("key_exchange");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.bench_function("full_3_messages_both_sides", |b| {
        b.iter(|| black_box(sessions(&alice, &bob)))
    });
    g.finish();

    let mut g = c.benchmark_group("session_form");
    for size in [256usize, 65536] {
        let body = vec![7u8; size];
        let mut buf = BytesMut::with_capacity(size + 256);
        g.throughput(Throughput::Bytes(size as u64));
        let (mut a, _) = sessions(&alice, &bob);
        g.bench_with_input(BenchmarkId::new("seal", size), &body, |bn, body| {
            bn.iter(|| {
                buf.clear();
                a.seal(
                    MessageId([1; 16]),
                    0,
                    dna_p2p::crypto::MessageKind::TEXT,
                    body,
                    &mut buf,
                )
                .unwrap();
            })
        });
        let (mut a, mut b) = sessions(&alice, &bob);
        g.bench_with_input(BenchmarkId::new("seal_open", size), &body, |bn, body| {
            bn.iter(|| seal_open(&mut a, &mut b, body, &mut buf))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sealed_form");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    let env = sealed::seal(
        &alice,
        bob.fingerprint(),
        bob.kem_public(),
        MessageId([2; 16]),
        0,
        dna_p2p::crypto::MessageKind::TEXT,
        &[1; 256],
        &mut OsRng,
    )
    .unwrap();
    g.bench_function("seal_256B", |b| {
        b.iter(|| {
            sealed::seal(
                &alice,
                bob.fingerprint(),
                bob.kem_public(),
                MessageId([2; 16]),
                0,
                dna_p2p::crypto::MessageKind::TEXT,
                &[1; 256],
                &mut OsRng,
            )
            .unwrap()
        })
    });
    g.bench_function("open_256B", |b| {
        b.iter(|| black_box(sealed::open(&bob, &env).unwrap()))
    });
    g.finish();
}

/// Operations per second of `f`, run for about `secs`.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn result_lines() {
    let alice = Identity::generate(&mut OsRng);
    let bob = Identity::generate(&mut OsRng);
    let sig = alice.sign(b"bench", &[b"msg"]);
    // Dilithium signing is rejection-sampled: its time depends on key and message, so vary
    // the message to measure the average.
    let mut n = 0u64;
    let sign = rate(1.0, || {
        n += 1;
        black_box(alice.sign(b"bench", &[&n.to_be_bytes()]));
    });
    let verify = rate(1.0, || {
        alice
            .public_key()
            .verify(b"bench", &[b"msg"], &sig)
            .unwrap()
    });
    let kex = rate(1.0, || {
        black_box(sessions(&alice, &bob));
    });
    let mut buf = BytesMut::new();
    let small = vec![7u8; 256];
    let (mut a, mut b) = sessions(&alice, &bob);
    let small_rate = rate(1.0, || seal_open(&mut a, &mut b, &small, &mut buf));
    let big = vec![7u8; 65536];
    let big_rate = rate(1.0, || seal_open(&mut a, &mut b, &big, &mut buf));
    let env = sealed::seal(
        &alice,
        bob.fingerprint(),
        bob.kem_public(),
        MessageId([2; 16]),
        0,
        dna_p2p::crypto::MessageKind::TEXT,
        &small,
        &mut OsRng,
    )
    .unwrap();
    let sealed_seal = rate(1.0, || {
        black_box(
            sealed::seal(
                &alice,
                bob.fingerprint(),
                bob.kem_public(),
                MessageId([2; 16]),
                0,
                dna_p2p::crypto::MessageKind::TEXT,
                &small,
                &mut OsRng,
            )
            .unwrap(),
        );
    });
    let sealed_open = rate(1.0, || {
        black_box(sealed::open(&bob, &env).unwrap());
    });
    println!("RESULT dilithium3_sign_per_s={sign:.0}");
    println!("RESULT dilithium3_verify_per_s={verify:.0}");
    println!("RESULT key_exchanges_per_s={kex:.0}");
    println!("RESULT session_seal_open_256b_msgs_per_s={small_rate:.0}");
    println!(
        "RESULT session_seal_open_64k_mib_s={:.0}",
        big_rate * 65536.0 / (1024.0 * 1024.0)
    );
    println!("RESULT sealed_seal_per_s={sealed_seal:.0}");
    println!("RESULT sealed_open_per_s={sealed_open:.0}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    result_lines();
}
