#![no_main]
// Property (the login-state and loop-guard cookies): no panic; a value the fuzzer made never
// opens; open(seal(x)) == x; a tampered sealed value never opens; a value sealed for one
// cookie never opens as another.
// Checked in fuzz/props/state_cookie.rs, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wxgate_fuzz::props::state_cookie::check(data));
