//! Generated protobuf and gRPC code for `keyward.v1`, and nothing else.
//! Lint relaxations for generated code live here and nowhere else.

#![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]

tonic::include_proto!("keyward.v1");

/// Encoded descriptors of `keyward.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keyward_descriptor");
