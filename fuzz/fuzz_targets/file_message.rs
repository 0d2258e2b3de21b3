//! Fuzz target `file_message`: see `dna_p2p::fuzzing::file_message` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::file_message(data));
