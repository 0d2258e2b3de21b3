//! Fuzz target `frame_stream`: see `dna_p2p::fuzzing::frame_stream` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::frame_stream(data));
