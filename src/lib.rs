//! Keyward: a key management service over gRPC.
//!
//! This root package is the edge: the gRPC services (proto <-> domain
//! conversion and the one error -> `Status` map, in [`grpc`]), the server
//! bootstrap ([`server::Server`]), the typed configuration ([`config`]) and the
//! command-line client ([`cli`]). Use cases live in `keyward-core`, storage in
//! `keyward-store`, cryptography in `keyward-crypto`.
//!
//! Always built: the generated code ([`pb`], [`k8s_pb`]), the CRC32C
//! checksums both sides compute ([`checksum`]) and the client commands.
//! Everything that serves (and needs RocksDB) is behind the default `server`
//! feature, so a client such as keyward-bench can depend on this package
//! with `default-features = false`.

pub mod checksum;
pub mod cli;
pub mod k8s_pb;
pub mod pb;

#[cfg(feature = "config")]
pub mod auth;
#[cfg(feature = "server")]
pub mod aws;
#[cfg(feature = "server")]
pub mod backup;
#[cfg(feature = "server")]
pub(crate) mod bearer;
#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "server")]
pub mod console;
#[cfg(feature = "server")]
pub mod grpc;
#[cfg(feature = "server")]
pub mod hardening;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "config")]
pub mod jwt;
#[cfg(feature = "server")]
pub mod k8s;
#[cfg(feature = "server")]
pub mod logging;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod observe;
#[cfg(feature = "server")]
pub mod seal;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod vault;

#[cfg(feature = "server")]
pub use config::{AwsKmsConfig, ServerConfig, VaultTransitConfig};
#[cfg(feature = "server")]
pub use server::{run, run_with_store, Prepared, Server, ServerError};
