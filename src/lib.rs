//! Keyward: a key management service over gRPC.
//!
//! This root package is the edge: the gRPC services (proto <-> domain
//! conversion and the one error -> `Status` map, in [`grpc`]), the server
//! bootstrap ([`server::run`]), the typed configuration ([`config`]) and the
//! command-line client ([`cli`]). Use cases live in `keyward-core`, storage in
//! `keyward-store`, cryptography in `keyward-crypto`.

pub mod auth;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod hardening;
pub mod k8s;
pub mod k8s_pb;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod pb;
pub mod server;

pub use config::ServerConfig;
pub use server::{run, run_with_store, ServerError};
