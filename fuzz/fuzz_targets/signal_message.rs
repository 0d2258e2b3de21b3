//! Fuzz target `signal_message`: see `dna_p2p::fuzzing::signal_message` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::signal_message(data));
