//! Fuzz target `record_verify`: see `dna_p2p::fuzzing::record_verify` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::record_verify(data));
