//! Helpers shared by the use-case tests over the stores.

#![allow(
    dead_code,
    reason = "each test file uses a different subset; `expect` would fail where one uses them all"
)]

use std::sync::Arc;

use keyward_core::testing::ManualClock;
use keyward_core::{Caller, Kms, KmsConfig, Policy, Store};
use keyward_crypto::RootKey;

/// An administrator with every role, request id `req-1`.
pub fn caller() -> Caller {
    Caller {
        request_id: "req-1".into(),
        principal: "admin".into(),
        peer: String::new(),
        edge: keyward_core::Edge::Grpc,
        policy: Arc::new(Policy::everything()),
    }
}

/// Opens the service over `store` with a fixed root key and `clock`.
pub fn open(store: &Arc<dyn Store>, clock: &ManualClock) -> Kms {
    open_with(store, clock, KmsConfig::default())
}

/// As [`open`], with a configuration.
pub fn open_with(store: &Arc<dyn Store>, clock: &ManualClock, config: KmsConfig) -> Kms {
    Kms::open(store.clone(), RootKey::from_bytes(&[9; 32]).unwrap(), Arc::new(clock.clone()), config).unwrap()
}
