//! Shamir's secret sharing of the root key (`blahaj`, over GF(2^8)) and the
//! text form of a share.
//!
//! A share is printed once, at `keyward operator init`, as
//! `kws1-<init id>-<index>-<64 hex>-<check>`: the init id names the
//! initialization it belongs to (so a share of another one is refused by
//! itself, before it is counted), the index is the share's x coordinate,
//! and the check is CRC32C of everything before it (a mistyped share is
//! refused by itself too). Whether K shares are the right ones is only
//! known once they are combined: the result must match the store's
//! root-key check value.

use std::convert::Infallible;

use keyward_crypto::RootKey;
use zeroize::{Zeroize, Zeroizing};

/// Most shares one initialization may have (x coordinates are 1..=255).
pub const MAX_SHARES: u8 = 255;

/// A share's text prefix (format version 1).
const PREFIX: &str = "kws1";

/// Why a share or a split was refused. Never carries share bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    /// Not a Keyward share at all, or mistyped.
    #[error("share: {0}")]
    Malformed(&'static str),
    /// A share of another initialization.
    #[error(
        "share: it belongs to initialization {found}, and this data folder was initialized as {expected}"
    )]
    OtherInit {
        /// The init id the share names.
        found: String,
        /// This folder's.
        expected: String,
    },
    /// `--shares` and `--threshold` out of range.
    #[error("{0}")]
    Parameters(String),
    /// The system's randomness failed.
    #[error("system randomness unavailable")]
    Random,
}

/// One parsed share (zeroized on drop).
#[derive(Clone)]
pub struct Share {
    /// The initialization it belongs to (8 hex characters).
    pub init_id: String,
    /// Its x coordinate, 1..=255.
    pub index: u8,
    y: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("init_id", &self.init_id)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Share {
    /// The text form printed to the operator.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut y = Zeroizing::new([0u8; 64]);
        hex::encode_to_slice(&*self.y, &mut *y).expect("32 bytes are 64 hex characters");
        let y = std::str::from_utf8(&*y).expect("hex is ASCII");
        // Reserved up front: no reallocation leaves a copy behind.
        let mut body = Zeroizing::new(String::with_capacity(96));
        body.push_str(PREFIX);
        body.push('-');
        body.push_str(&self.init_id);
        body.push_str(&format!("-{:02x}-", self.index));
        body.push_str(y);
        let check = crc32c::crc32c(body.as_bytes());
        body.push_str(&format!("-{check:08x}"));
        body
    }

    /// Parses a share as printed (surrounding whitespace ignored, any case).
    pub fn parse(text: &str) -> Result<Self, ShareError> {
        let text = Zeroizing::new(text.trim().to_ascii_lowercase());
        let parts: Vec<&str> = text.split('-').collect();
        let [prefix, init, index, y, check] = parts.as_slice() else {
            return Err(ShareError::Malformed(
                "expected kws1-<init id>-<index>-<64 hex characters>-<check>, as `keyward operator init` printed it",
            ));
        };
        if *prefix != PREFIX {
            return Err(ShareError::Malformed("it does not start with kws1-"));
        }
        let body_len = text.len() - check.len() - 1;
        let want =
            u32::from_str_radix(check, 16).map_err(|_| ShareError::Malformed("its check is not hex"))?;
        if check.len() != 8 || crc32c::crc32c(&text.as_bytes()[..body_len]) != want {
            return Err(ShareError::Malformed(
                "its check does not match: the share is mistyped or truncated",
            ));
        }
        if init.len() != 8 || !init.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ShareError::Malformed("its init id is not 8 hex characters"));
        }
        let index = u8::from_str_radix(index, 16)
            .ok()
            .filter(|i| *i != 0)
            .ok_or(ShareError::Malformed("its index is not 01..ff"))?;
        if y.len() != 64 {
            return Err(ShareError::Malformed("its value is not 32 bytes (64 hex characters)"));
        }
        let mut bytes = Zeroizing::new(vec![0u8; 32]);
        hex::decode_to_slice(y, &mut bytes[..]).map_err(|_| ShareError::Malformed("its value is not hex"))?;
        let y = bytes;
        Ok(Self { init_id: init.to_string(), index, y })
    }

    /// What `seal.json` keeps of this share: SHA-256 over a label, the init
    /// id, the index and the value. A share's value is 32 uniformly random
    /// bytes, so its commitment tells nothing about it; it lets each share
    /// be checked when it is offered, before it counts.
    pub fn commitment(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"keyward/v1/shamir-share\0");
        ctx.update(self.init_id.as_bytes());
        ctx.update(&[self.index]);
        ctx.update(&self.y);
        ctx.finish().as_ref().try_into().expect("32 bytes")
    }

    /// Refuses a share of another initialization.
    pub fn check_init(&self, expected: &str) -> Result<(), ShareError> {
        if self.init_id == expected {
            Ok(())
        } else {
            Err(ShareError::OtherInit { found: self.init_id.clone(), expected: expected.to_string() })
        }
    }
}

/// A fresh init id: 4 random bytes as 8 hex characters.
pub fn new_init_id() -> Result<String, ShareError> {
    let mut b = [0u8; 4];
    keyward_crypto::random_bytes(&mut b).map_err(|_| ShareError::Random)?;
    Ok(hex::encode(b))
}

/// Checks `--shares N --threshold K`: 1 ≤ K ≤ N ≤ 255, and K ≥ 2 unless N = 1.
pub fn check_parameters(shares: u32, threshold: u32) -> Result<(u8, u8), ShareError> {
    let bad = |m: String| Err(ShareError::Parameters(m));
    if shares == 0 || shares > u32::from(MAX_SHARES) {
        return bad(format!("--shares must be 1..={MAX_SHARES}, not {shares}"));
    }
    if threshold == 0 || threshold > shares {
        return bad(format!("--threshold must be 1..=--shares ({shares}), not {threshold}"));
    }
    if threshold == 1 && shares > 1 {
        return bad(
            "--threshold 1 with several shares makes each share a copy of the root key; use 2 or more".into(),
        );
    }
    Ok((shares as u8, threshold as u8))
}

/// Splits `root` into `shares` shares, any `threshold` of which rebuild it.
pub fn split(root: &RootKey, init_id: &str, shares: u8, threshold: u8) -> Result<Vec<Share>, ShareError> {
    let mut rng = SystemRng::new()?;
    let dealer = blahaj::Sharks(threshold).dealer_rng(root.expose_secret(), &mut rng);
    let out = dealer
        .take(usize::from(shares))
        .map(|s| {
            let bytes = Zeroizing::new(Vec::<u8>::from(&s));
            Share { init_id: init_id.to_string(), index: bytes[0], y: Zeroizing::new(bytes[1..].to_vec()) }
        })
        .collect();
    Ok(out)
}

/// Rebuilds the root key from `threshold` distinct shares. Whether it is the
/// right one is for the caller to check (the store's check value).
pub fn combine(shares: &[Share], threshold: u8) -> Result<RootKey, ShareError> {
    let parsed: Vec<blahaj::Share> = shares
        .iter()
        .map(|s| {
            let mut bytes = Zeroizing::new(Vec::with_capacity(33));
            bytes.push(s.index);
            bytes.extend_from_slice(&s.y);
            blahaj::Share::try_from(bytes.as_slice()).map_err(ShareError::Malformed)
        })
        .collect::<Result<_, _>>()?;
    let sharks = blahaj::Sharks(threshold);
    let secret = Zeroizing::new(
        sharks
            .recover(&parsed)
            .map_err(|_| ShareError::Malformed("fewer distinct shares than the threshold"))?,
    );
    RootKey::from_bytes(&secret).map_err(|_| ShareError::Malformed("the shares do not make a 32-byte key"))
}

/// ring's system randomness behind `rand_core`'s traits, as `blahaj` takes
/// it: drawn in blocks, fallibly up front; a later block that cannot be
/// drawn panics (getrandom on Linux does not fail once it has worked).
struct SystemRng {
    buf: Zeroizing<[u8; 512]>,
    used: usize,
}

impl SystemRng {
    fn new() -> Result<Self, ShareError> {
        let mut buf = Zeroizing::new([0u8; 512]);
        keyward_crypto::random_bytes(&mut *buf).map_err(|_| ShareError::Random)?;
        Ok(Self { buf, used: 0 })
    }
}

impl Drop for SystemRng {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl rand_core::TryRng for SystemRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            if self.used == self.buf.len() {
                keyward_crypto::random_bytes(&mut *self.buf).expect("system randomness");
                self.used = 0;
            }
            *byte = self.buf[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for SystemRng {}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> RootKey {
        RootKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn any_threshold_of_the_shares_rebuild_the_key() {
        let shares = split(&root(), "0a0b0c0d", 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        let idx: Vec<u8> = shares.iter().map(|s| s.index).collect();
        assert_eq!(idx, vec![1, 2, 3, 4, 5]);
        for pick in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            let some: Vec<Share> = pick.iter().map(|i| shares[*i].clone()).collect();
            assert_eq!(combine(&some, 3).unwrap().expose_secret(), root().expose_secret());
        }
        // Two shares rebuild something else (or nothing).
        let two: Vec<Share> = shares[..2].to_vec();
        assert!(combine(&two, 3).is_err());
        let wrong = combine(&two, 2).unwrap();
        assert_ne!(wrong.expose_secret(), root().expose_secret());
    }

    #[test]
    fn shares_differ_between_splits() {
        let a = split(&root(), "0a0b0c0d", 3, 2).unwrap();
        let b = split(&root(), "0a0b0c0d", 3, 2).unwrap();
        assert_ne!(a[0].to_text().as_str(), b[0].to_text().as_str());
    }

    #[test]
    fn text_form_round_trips_and_catches_typos() {
        let s = split(&root(), "0a0b0c0d", 3, 2).unwrap().remove(1);
        let text = s.to_text();
        assert!(text.starts_with("kws1-0a0b0c0d-02-"), "{}", text.as_str());
        let back = Share::parse(&format!("  {}\n", text.to_uppercase())).unwrap();
        assert_eq!((back.index, back.init_id.as_str()), (2, "0a0b0c0d"));
        assert_eq!(*back.y, *s.y);
        // One character changed anywhere: refused by the check.
        for i in [6, 15, 30, text.len() - 1] {
            let mut t = text.as_bytes().to_vec();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            let e = Share::parse(std::str::from_utf8(&t).unwrap()).unwrap_err();
            assert!(matches!(e, ShareError::Malformed(_)), "{i}: {e}");
        }
        for bad in ["", "hello", "kws1-a-b-c-d", &text[..text.len() - 2]] {
            assert!(Share::parse(bad).is_err(), "{bad}");
        }
        let e = back.check_init("ffffffff").unwrap_err().to_string();
        assert!(e.contains("0a0b0c0d") && e.contains("ffffffff"), "{e}");
        assert!(!format!("{back:?}").contains(&hex::encode(&*s.y)));
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(check_parameters(5, 3).unwrap(), (5, 3));
        assert_eq!(check_parameters(1, 1).unwrap(), (1, 1));
        for (n, k) in [(0, 0), (3, 0), (3, 4), (256, 2), (3, 1)] {
            assert!(check_parameters(n, k).is_err(), "{n} {k}");
        }
    }
}
