//! The one source of randomness: ring's `SystemRandom` (getrandom).

use ring::rand::{SecureRandom, SystemRandom};

use crate::CryptoError;

/// Fills `out` from the system CSPRNG.
pub fn random_bytes(out: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new().fill(out).map_err(|_| CryptoError::Random)
}

pub(crate) fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    random_bytes(&mut out)?;
    Ok(out)
}
