//! The one source of randomness: the system CSPRNG (getrandom, through
//! ring's `SystemRandom`), drawn in blocks.
//!
//! A request needs about 60 random bytes (a data key, a salt, a nonce); one
//! getrandom system call for each was about 3 % of the server's time on the
//! hot path. So each thread keeps a block of 4 KiB from the system CSPRNG
//! and hands out each byte of it once: small requests are served from the
//! block, and the bytes handed out are wiped from it at once, so the block
//! never holds a copy of anything already in use (only bytes not yet
//! drawn). The block is wiped when its thread ends. Requests larger than
//! [`POOLED_MAX`] go to the system directly. Keyward never forks, so no two
//! processes can share a block.

use std::cell::RefCell;

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

use crate::CryptoError;

/// Bytes of system randomness a thread draws at once.
const BLOCK: usize = 4096;

/// Largest request served from the thread's block.
const POOLED_MAX: usize = 256;

/// A thread's undrawn system randomness: `bytes[used..]` are fresh; the
/// drawn ones before them are zero.
struct Pool {
    bytes: Box<[u8; BLOCK]>,
    used: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool { bytes: Box::new([0; BLOCK]), used: BLOCK });
}

fn system(out: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new().fill(out).map_err(|_| CryptoError::Random)
}

/// Fills `out` from the system CSPRNG (small requests from this thread's
/// block of it; no byte is ever handed out twice).
pub fn random_bytes(out: &mut [u8]) -> Result<(), CryptoError> {
    if out.len() > POOLED_MAX {
        return system(out);
    }
    POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.used + out.len() > BLOCK {
            // What is left is too short: wipe it and draw a new block.
            p.bytes.zeroize();
            system(&mut p.bytes[..])?;
            p.used = 0;
        }
        let start = p.used;
        let drawn = &mut p.bytes[start..start + out.len()];
        out.copy_from_slice(drawn);
        drawn.zeroize();
        p.used += out.len();
        Ok(())
    })
    // A thread being torn down has no block any more: ask the system.
    .unwrap_or_else(|_| system(out))
}

pub(crate) fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    random_bytes(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_draws_are_the_same_across_blocks() {
        // 2,000 draws of 48 bytes cross many 4 KiB blocks; each must be new.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let mut b = [0u8; 48];
            random_bytes(&mut b).unwrap();
            assert_ne!(b, [0u8; 48]);
            assert!(seen.insert(b), "a draw repeated");
        }
    }

    #[test]
    fn drawn_bytes_are_wiped_from_the_block() {
        let mut a = [0u8; 32];
        random_bytes(&mut a).unwrap();
        POOL.with(|p| {
            let p = p.borrow();
            assert!(p.used >= 32);
            assert!(p.bytes[..p.used].iter().all(|&b| b == 0), "drawn bytes are still in the block");
        });
    }

    #[test]
    fn large_and_odd_sized_requests_are_filled() {
        for len in [0, 1, 255, 256, 257, 4095, 4096, 10_000] {
            let mut v = vec![0u8; len];
            random_bytes(&mut v).unwrap();
            if len >= 32 {
                assert!(v.iter().any(|&b| b != 0), "{len} bytes left zero");
            }
        }
        // A request that does not fit what is left of the block starts a new one.
        POOL.with(|p| p.borrow_mut().used = BLOCK - 10);
        let mut b = [0u8; 200];
        random_bytes(&mut b).unwrap();
        assert!(b.iter().any(|&x| x != 0));
        POOL.with(|p| assert_eq!(p.borrow().used, 200));
    }

    #[test]
    fn threads_draw_from_their_own_blocks() {
        let draw = || {
            let mut b = [0u8; 32];
            random_bytes(&mut b).unwrap();
            b
        };
        let here = draw();
        let there = std::thread::spawn(draw).join().unwrap();
        assert_ne!(here, there);
    }
}
