//! Fuzz target `envelope_open`: see `dna_p2p::fuzzing::envelope_open` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::envelope_open(data));
