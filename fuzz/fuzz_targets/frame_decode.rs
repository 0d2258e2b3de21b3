//! Fuzz target `frame_decode`: see `dna_p2p::fuzzing::frame_decode` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::frame_decode(data));
