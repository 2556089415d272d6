//! Authentication: the pure security primitives of the WeChat login flow
//! (session cookies, JWT signing, return-path sanitising, client detection,
//! login state). No network I/O lives in these submodules.

pub mod jwt;
pub mod redirect;
pub mod session;
pub mod state;
pub mod ua;
