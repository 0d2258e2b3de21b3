//! Fuzz target `relay_datagram`: see `dna_p2p::fuzzing::relay_datagram` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dna_p2p::fuzzing::relay_datagram(data));
