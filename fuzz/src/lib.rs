//! The fuzz crate's library: the properties of `props/`, shared with the root crate's
//! `tests/fuzz_corpus.rs` (which includes the same files), so each target's property also
//! runs under plain `cargo test` over the committed corpus and reproducers.

#[path = "../props/mod.rs"]
pub mod props;
