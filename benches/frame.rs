//! Frame decoding (header checks + CRC32) against crc32fast alone over the same payload
//! bytes, on a mix of payload sizes from 64 B to 64 KiB.
//!
//! Criterion reports each; the last lines are `RESULT key=value`, from an interleaved
//! measurement in this same run: `decode_vs_crc32fast` is the streaming decoder's throughput
//! (what a QUIC stream uses) divided by crc32fast's throughput over the same payloads.
#![allow(clippy::disallowed_methods)] // a benchmark is a driver: it reads the clock.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, Criterion, Throughput};
use dna_p2p::wire::{
    decode_frame, encode_frame, FrameDecoder, FrameLimits, MessageType, HEADER_LEN,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// (payload size, number of frames): many small messages, fewer large ones.
const MIX: [(usize, usize); 6] = [
    (64, 1024),
    (256, 512),
    (1024, 256),
    (4096, 64),
    (16384, 16),
    (65536, 8),
];

struct Mix {
    stream: Bytes,
    /// (offset, len) of each payload inside `stream`.
    payloads: Vec<(usize, usize)>,
    payload_bytes: usize,
}

fn mix() -> Mix {
    let mut sizes: Vec<usize> = MIX
        .iter()
        .flat_map(|&(s, n)| std::iter::repeat_n(s, n))
        .collect();
    sizes.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    let mut out = BytesMut::new();
    let mut payloads = Vec::new();
    let mut fill = 0u8;
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|j| fill.wrapping_add(j as u8)).collect();
        fill = fill.wrapping_add(1);
        let at = out.len() + HEADER_LEN;
        encode_frame(
            MessageType::Data,
            i as u32,
            &payload,
            &FrameLimits::default(),
            &mut out,
        )
        .unwrap();
        payloads.push((at, size));
    }
    let payload_bytes = sizes.iter().sum();
    Mix {
        stream: out.freeze(),
        payloads,
        payload_bytes,
    }
}

/// The streaming decoder as the session uses it (`decode`: whole frames lent from the input).
fn decode_stream(m: &Mix) -> usize {
    let mut dec = FrameDecoder::new(FrameLimits::default());
    let mut input: &[u8] = &m.stream;
    let mut n = 0;
    while let Ok(Some(f)) = dec.decode(&mut input) {
        n += f.payload().len();
    }
    n
}

/// The streaming decoder handing out owned `Bytes` payloads (`feed`).
fn decode_stream_owned(m: &Mix) -> usize {
    let mut dec = FrameDecoder::new(FrameLimits::default());
    let mut input = m.stream.clone();
    let mut n = 0;
    while let Ok(Some(f)) = dec.feed(&mut input) {
        n += f.payload.len();
    }
    n
}

fn decode_oneshot(m: &Mix) -> usize {
    let limits = FrameLimits::default();
    let mut rest = &m.stream[..];
    let mut n = 0;
    while let Ok((f, used)) = decode_frame(rest, &limits) {
        n += f.payload.len();
        rest = &rest[used..];
    }
    n
}

fn crc_alone(m: &Mix) -> u32 {
    let mut acc = 0u32;
    for &(at, len) in &m.payloads {
        acc ^= crc32fast::hash(&m.stream[at..at + len]);
    }
    acc
}

fn bench(c: &mut Criterion) {
    let m = mix();
    assert_eq!(decode_stream(&m), m.payload_bytes);
    assert_eq!(decode_oneshot(&m), m.payload_bytes);
    assert_eq!(decode_stream_owned(&m), m.payload_bytes);
    let mut g = c.benchmark_group("frame_mix");
    g.throughput(Throughput::Bytes(m.payload_bytes as u64));
    g.bench_function("decode_stream", |b| {
        b.iter(|| black_box(decode_stream(black_box(&m))))
    });
    g.bench_function("decode_oneshot", |b| {
        b.iter(|| black_box(decode_oneshot(black_box(&m))))
    });
    g.bench_function("crc32fast_alone", |b| {
        b.iter(|| black_box(crc_alone(black_box(&m))))
    });
    g.finish();
    let mut g = c.benchmark_group("frame_64B");
    let small = Mix {
        payloads: m.payloads.iter().copied().filter(|p| p.1 == 64).collect(),
        ..mix_of(64, 4096)
    };
    g.throughput(Throughput::Elements(4096));
    g.bench_function("decode_stream", |b| {
        b.iter(|| black_box(decode_stream(black_box(&small))))
    });
    g.finish();
}

fn mix_of(size: usize, n: usize) -> Mix {
    let mut out = BytesMut::new();
    let mut payloads = Vec::new();
    for i in 0..n {
        payloads.push((out.len() + HEADER_LEN, size));
        encode_frame(
            MessageType::Data,
            i as u32,
            &vec![i as u8; size],
            &FrameLimits::default(),
            &mut out,
        )
        .unwrap();
    }
    Mix {
        stream: out.freeze(),
        payloads,
        payload_bytes: size * n,
    }
}

/// Median time of `f` over `rounds`, interleaved with the other side by the caller.
fn time(f: &mut dyn FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ratio(m: &Mix, decode: fn(&Mix) -> usize) -> f64 {
    let (mut d, mut c) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        d.push(time(&mut || {
            black_box(decode(black_box(m)));
        }));
        c.push(time(&mut || {
            black_box(crc_alone(black_box(m)));
        }));
    }
    // Same bytes on both sides: throughput ratio = inverse time ratio.
    median(c).as_secs_f64() / median(d).as_secs_f64()
}

fn result_lines() {
    let m = mix();
    let small = mix_of(64, 4096);
    let stream = ratio(&m, decode_stream);
    let oneshot = ratio(&m, decode_oneshot);
    let owned = ratio(&m, decode_stream_owned);
    let small_ratio = ratio(&small, decode_stream);
    let mut t = Vec::new();
    for _ in 0..100 {
        t.push(time(&mut || {
            black_box(decode_stream(black_box(&m)));
        }));
    }
    let mib_s = m.payload_bytes as f64 / median(t).as_secs_f64() / (1024.0 * 1024.0);
    println!("RESULT decode_mib_s={mib_s:.0}");
    println!("RESULT decode_oneshot_vs_crc32fast={oneshot:.3}");
    println!("RESULT decode_owned_vs_crc32fast={owned:.3}");
    println!("RESULT decode_64b_vs_crc32fast={small_ratio:.3}");
    println!("RESULT decode_vs_crc32fast={stream:.3}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    result_lines();
}
