//! The ciphertext parser and `open`: arbitrary bytes never panic and never
//! open; a real ciphertext with any byte changed never opens; unchanged, it
//! opens to its plaintext.
#![no_main]

use std::sync::OnceLock;

use keyward_crypto::{open, seal, CiphertextHeader, EncryptionContext, VersionSecret};
use libfuzzer_sys::fuzz_target;

const KEY_ID: [u8; 16] = [0x11; 16];
const PLAINTEXT: &[u8] = b"fuzz plaintext";

fn secret() -> VersionSecret {
    VersionSecret::from_bytes(&[7; 32]).unwrap()
}

fn context() -> EncryptionContext {
    EncryptionContext::new([("tenant".to_string(), "acme".to_string())])
}

fn sealed() -> &'static Vec<u8> {
    static CT: OnceLock<Vec<u8>> = OnceLock::new();
    CT.get_or_init(|| seal(&secret(), &KEY_ID, 3, &context(), PLAINTEXT).unwrap())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = CiphertextHeader::parse(data) {
        assert_eq!(h.key_id[..], data[1..17]);
    }
    let ct = sealed();
    if data != ct.as_slice() {
        assert!(open(&secret(), data, &context()).is_err(), "forged ciphertext opened");
    }
    // The input as a patch: (position, xor) pairs applied to a real ciphertext.
    let mut patched = ct.clone();
    for pair in data.chunks_exact(2) {
        let i = pair[0] as usize % patched.len();
        patched[i] ^= pair[1];
    }
    match open(&secret(), &patched, &context()) {
        Ok(p) => {
            assert_eq!(&patched, ct, "altered ciphertext opened");
            assert_eq!(p.expose_secret(), PLAINTEXT);
        }
        Err(_) => assert_ne!(&patched, ct, "genuine ciphertext failed to open"),
    }
});
