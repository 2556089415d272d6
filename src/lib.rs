#![forbid(unsafe_code)]
pub mod simulator;
