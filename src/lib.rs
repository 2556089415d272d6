//! wxgate: an authentication gateway and reverse proxy for WeChat web apps. It runs WeChat's
//! silent `snsapi_base` login in front of unmodified upstreams and forwards every request
//! with identity headers and a signed JWT that no client can forge.
#![forbid(unsafe_code)]

pub mod accesslog;
pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod cookies;
pub mod demo;
pub mod error;
pub mod handler;
pub mod headers;
pub mod logfilter;
pub mod logwriter;
pub mod pages;
pub mod path;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod simulator;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod wechat;
