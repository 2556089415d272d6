#![no_main]
// Property (safe_return_to, strip_params, encode_for_location): no panic; the input comes
// back unchanged or as "/"; anything accepted is a same-origin path (one leading '/', no
// '//' or '/\', no scheme, no controls or backslashes even after one more decoding) whose
// Location header value is valid.
// Checked in fuzz/props/return_to.rs, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wxgate_fuzz::props::return_to::check(data));
