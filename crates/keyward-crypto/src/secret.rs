//! Secret types. Each zeroizes on drop, prints as `REDACTED`, has no `Clone`
//! and no serde, and exposes its bytes only through `expose_secret`.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::random::random_array;
use crate::CryptoError;

/// Length of root keys and master-key version secrets: 256 bits.
pub const SECRET_LEN: usize = 32;

/// A byte vector wiped when dropped, in bulk: zeroize's `Vec` impl wipes
/// element by element (one volatile store per byte, 1.1 µs for the 4 KiB
/// plaintext of every Encrypt); the slice impl writes every byte with one
/// fill and an optimization barrier, which the compiler cannot remove.
#[derive(Default)]
struct WipedVec(Vec<u8>);

impl Drop for WipedVec {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Wipes `v`'s bytes and its spare capacity, then empties it.
pub(crate) fn wipe(v: &mut Vec<u8>) {
    zero_all(v);
    v.clear();
}

/// Zeroes the whole allocation, spare capacity included (its length
/// becomes its capacity).
fn zero_all(v: &mut Vec<u8>) {
    v.resize(v.capacity(), 0);
    v.as_mut_slice().zeroize();
}

macro_rules! fixed_secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; SECRET_LEN]);

        impl $name {
            /// Generates a fresh secret from the system CSPRNG.
            pub fn generate() -> Result<Self, CryptoError> {
                Ok(Self(random_array()?))
            }

            /// Takes ownership of raw bytes; they must be exactly 32.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
                let arr: [u8; SECRET_LEN] = bytes
                    .try_into()
                    .map_err(|_| CryptoError::BadKeyLength { expected: SECRET_LEN })?;
                Ok(Self(arr))
            }

            /// The raw key bytes. Grep for this name when auditing where secrets flow.
            pub fn expose_secret(&self) -> &[u8; SECRET_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(REDACTED)"))
            }
        }
    };
}

fixed_secret!(
    /// The root key: seals every master-key version secret at rest.
    RootKey
);
fixed_secret!(
    /// One master-key version's secret. Exists in plaintext only in this
    /// process's memory; per-message keys are derived from it with HKDF.
    VersionSecret
);

macro_rules! var_secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(WipedVec);

        impl $name {
            /// Wraps bytes that are secret from now on.
            pub fn new(bytes: Vec<u8>) -> Self {
                Self(WipedVec(bytes))
            }

            /// The secret bytes. Grep for this name when auditing where secrets flow.
            pub fn expose_secret(&self) -> &[u8] {
                &self.0 .0
            }

            /// Hands the bytes to a caller that takes over their protection
            /// (for example a protobuf response about to be sent).
            pub fn into_exposed(mut self) -> Vec<u8> {
                std::mem::take(&mut self.0 .0)
            }

            /// Length in bytes (not secret).
            pub fn len(&self) -> usize {
                self.0 .0.len()
            }

            /// Whether there are no bytes.
            pub fn is_empty(&self) -> bool {
                self.0 .0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(REDACTED, {} bytes)"), self.0 .0.len())
            }
        }
    };
}

var_secret!(
    /// A data key handed to a caller of `GenerateDataKey`.
    DataKey
);
var_secret!(
    /// Caller plaintext, before sealing or after opening.
    Plaintext
);

impl DataKey {
    /// Generates `len` random bytes from the system CSPRNG.
    pub fn generate(len: usize) -> Result<Self, CryptoError> {
        let mut bytes = vec![0u8; len];
        crate::random_bytes(&mut bytes)?;
        Ok(Self::new(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_bytes() {
        let k = RootKey::from_bytes(&[0xAB; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "RootKey(REDACTED)");
        let d = DataKey::new(vec![0xCD; 5]);
        let s = format!("{d:?}");
        assert!(s.contains("REDACTED") && !s.contains("205") && !s.to_lowercase().contains("cd"));
        let p = Plaintext::new(b"hunter2".to_vec());
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn wipe_clears_bytes_and_spare_capacity() {
        let mut v = vec![0x5A; 8192];
        // Bytes beyond the length that an earlier use left behind.
        v.truncate(4096);
        let (ptr, cap) = (v.as_ptr(), v.capacity());
        zero_all(&mut v);
        assert_eq!((v.as_ptr(), v.len()), (ptr, cap), "the same allocation, all of it");
        assert!(v.iter().all(|&b| b == 0), "a byte survived the wipe");
        wipe(&mut v);
        assert!(v.is_empty());
        assert_eq!(v.capacity(), cap, "nothing is freed or moved unwiped");
        let p = Plaintext::new(vec![0xA5; 4096]);
        assert_eq!(p.expose_secret(), &[0xA5; 4096][..]);
        assert_eq!(p.into_exposed().len(), 4096);
    }

    #[test]
    fn wrong_length_is_refused() {
        assert_eq!(
            VersionSecret::from_bytes(&[0; 31]).unwrap_err(),
            CryptoError::BadKeyLength { expected: 32 }
        );
    }

    #[test]
    fn generated_secrets_differ() {
        let a = VersionSecret::generate().unwrap();
        let b = VersionSecret::generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(DataKey::generate(17).unwrap().len(), 17);
    }
}
