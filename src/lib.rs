#![forbid(unsafe_code)]

pub mod auth;
