//! Helpers shared by integration tests. Each test binary compiles this
//! module separately and uses only part of it, hence the dead_code allowance.
#![allow(dead_code)]

pub mod redirect_vectors;
