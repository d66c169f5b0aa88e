//! Generated code for the upstream Kubernetes KMS v2 API (package `v2`),
//! from `proto/k8s.io/kms/apis/v2/api.proto`, unchanged.

#![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]

tonic::include_proto!("v2");
