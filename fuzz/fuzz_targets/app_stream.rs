//! Fuzz target `app_stream`: see `dna_p2p::fuzzing::app_stream` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::app_stream(data));
