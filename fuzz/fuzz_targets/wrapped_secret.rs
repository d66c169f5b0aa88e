//! The wrapped-secret parser (`RootKey::unwrap`): arbitrary bytes never panic
//! and never unwrap; a real wrapped secret with any byte changed never
//! unwraps; unchanged, it unwraps to its secret, and only for its key id and
//! version.
#![no_main]

use std::sync::OnceLock;

use keyward_crypto::{RootKey, VersionSecret, WrappedVersionSecret};
use libfuzzer_sys::fuzz_target;

const KEY_ID: [u8; 16] = [0x22; 16];

fn root() -> &'static RootKey {
    static ROOT: OnceLock<RootKey> = OnceLock::new();
    ROOT.get_or_init(|| RootKey::from_bytes(&[9; 32]).unwrap())
}

fn wrapped() -> &'static Vec<u8> {
    static W: OnceLock<Vec<u8>> = OnceLock::new();
    W.get_or_init(|| {
        let s = VersionSecret::from_bytes(&[5; 32]).unwrap();
        root().wrap(&KEY_ID, 1, &s).unwrap().as_bytes().to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    let real = wrapped();
    if data != real.as_slice() {
        let w = WrappedVersionSecret::from_stored(data.to_vec());
        assert!(root().unwrap(&KEY_ID, 1, &w).is_err(), "forged wrapped secret opened");
    }
    let mut patched = real.clone();
    for pair in data.chunks_exact(2) {
        let i = pair[0] as usize % patched.len();
        patched[i] ^= pair[1];
    }
    // The version bound into the AAD: any other version fails.
    let version = data.first().map_or(1, |b| u32::from(*b % 3));
    let result = root().unwrap(&KEY_ID, version, &WrappedVersionSecret::from_stored(patched.clone()));
    match result {
        Ok(s) => {
            assert!(&patched == real && version == 1, "altered wrapped secret opened");
            assert_eq!(s.expose_secret(), &[5; 32]);
        }
        Err(_) => assert!(&patched != real || version != 1, "genuine wrapped secret failed"),
    }
});
