//! Fuzz target `stun_message`: see `dna_p2p::fuzzing::stun_message` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::stun_message(data));
