//! The stored-record decoders (keyward-format): arbitrary bytes never panic;
//! whatever decodes re-encodes to bytes that decode to the same value.
#![no_main]

use keyward_core::VersionMap;
use keyward_format::{access, aliases, audit, keys, usage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 8 {
        0 => {
            if let Ok(r) = keys::decode(bytes, VersionMap::new()) {
                let again = keys::encode(&r).expect("a decoded format-2 record has a tag");
                assert_eq!(keys::decode(&again, VersionMap::new()).unwrap(), r);
            }
        }
        1 => {
            if let Ok(r) = keys::decode_v1(bytes) {
                assert_eq!(keys::decode_v1(&keys::encode_v1(&r)).unwrap(), r);
            }
        }
        2 => {
            if let Ok(r) = audit::decode(bytes) {
                assert_eq!(audit::decode(&audit::encode(&r)).unwrap(), r);
            }
        }
        3 => {
            if let Ok(h) = audit::decode_head(bytes) {
                assert_eq!(audit::decode_head(&audit::encode_head(&h)).unwrap(), h);
            }
        }
        4 => {
            if let Some(u) = usage::decode(bytes) {
                assert_eq!(usage::decode(&usage::encode(&u)), Some(u));
            }
            if let Some((id, v)) = usage::decode_key(bytes) {
                assert_eq!(usage::key(id, v).as_slice(), bytes);
            }
        }
        5 => {
            let (name, value) = bytes.split_at(bytes.len() / 2);
            if let Ok(e) = aliases::decode(name, value) {
                assert_eq!(aliases::decode(name, &aliases::encode(&e).unwrap()).unwrap(), e);
            }
            let _ = aliases::decode_v1(name, value);
        }
        6 => {
            if let Ok(r) = access::decode(bytes) {
                let again = access::encode(&r).expect("a decoded access record has a tag");
                assert_eq!(access::decode(&again).unwrap(), r);
            }
            let _ = access::decode_use(bytes, bytes);
        }
        _ => {
            if let Some((id, v)) = keys::decode_secret_key(bytes) {
                assert_eq!(keys::secret_key(id, v).as_slice(), bytes);
            }
        }
    }
});
