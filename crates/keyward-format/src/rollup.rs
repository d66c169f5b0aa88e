//! The audit log's hourly counts (`keyward_core::rollup`), added without a
//! format bump (older builds never read them; a folder without them has
//! them rebuilt from its log at open).
//!
//! Keys (hour: Unix ms / 3,600,000 as u32 big-endian, so a range of hours is
//! a range of keys):
//! - `u` || key UUID (16) || hour || version (u32 BE): uses of one version
//! - `o` || hour || len (u8) || operation || outcome: records, all keys
//! - `k` || key UUID (16) || hour || len (u8) || operation || outcome: records naming one key
//! - `p` || len (u8) || principal || hour || len (u8) || operation || outcome: one principal's records
//!
//! Value: three little-endian u64 counters (24 bytes): for `u`,
//! encryptions, data keys, decryptions; for `o` and `k`, records, 0, 0.
//! A commit adds its counts to the stored ones element by element ([`add`]).

use keyward_core::rollup::{HourOutcome, HourUsage, OutcomesOf, RollupKey};
use keyward_core::KeyId;

/// The stored key of a count.
pub fn key(k: &RollupKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    let named = |out: &mut Vec<u8>, op: &str, outcome: &str| {
        let op = &op.as_bytes()[..op.len().min(255)];
        out.push(op.len() as u8);
        out.extend_from_slice(op);
        out.extend_from_slice(outcome.as_bytes());
    };
    match k {
        RollupKey::Usage { key, hour, version } => {
            out.push(b'u');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&hour.to_be_bytes());
            out.extend_from_slice(&version.to_be_bytes());
        }
        RollupKey::Outcome { hour, operation, outcome } => {
            out.push(b'o');
            out.extend_from_slice(&hour.to_be_bytes());
            named(&mut out, operation, outcome);
        }
        RollupKey::PrincipalOutcome { principal, hour, operation, outcome } => {
            out.push(b'p');
            push_short(&mut out, principal);
            out.extend_from_slice(&hour.to_be_bytes());
            named(&mut out, operation, outcome);
        }
        RollupKey::KeyOutcome { key, hour, operation, outcome } => {
            out.push(b'k');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&hour.to_be_bytes());
            named(&mut out, operation, outcome);
        }
    }
    out
}

/// A name of at most 255 bytes, with its length (longer ones are cut at a
/// character boundary: principal names are at most 128 bytes anyway).
fn push_short(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Where the outcome counts of hour `hour` start, of whose records `of` says.
pub fn outcomes_start(of: &OutcomesOf, hour: u32) -> Vec<u8> {
    match of {
        OutcomesOf::All => range_start(b'o', None, hour),
        OutcomesOf::Key(k) => range_start(b'k', Some(*k), hour),
        OutcomesOf::Principal(p) => {
            let mut out = vec![b'p'];
            push_short(&mut out, p);
            out.extend_from_slice(&hour.to_be_bytes());
            out
        }
    }
}

/// Where the counts of hour `hour` of one kind start: `u` and `k` for a
/// key, `o` for all.
pub fn range_start(kind: u8, key: Option<KeyId>, hour: u32) -> Vec<u8> {
    let mut out = vec![kind];
    if let Some(k) = key {
        out.extend_from_slice(k.as_bytes());
    }
    out.extend_from_slice(&hour.to_be_bytes());
    out
}

/// The stored value of counts.
pub fn encode(v: &[u64; 3]) -> [u8; 24] {
    let mut b = [0u8; 24];
    for (i, n) in v.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&n.to_le_bytes());
    }
    b
}

/// Reads a stored value (`None` if it is not 24 bytes).
pub fn decode(b: &[u8]) -> Option<[u64; 3]> {
    if b.len() != 24 {
        return None;
    }
    let n = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Some([n(0), n(1), n(2)])
}

/// `existing` plus each operand, element by element (a value of the wrong
/// size counts as zero).
pub fn add<'a>(existing: Option<&[u8]>, operands: impl Iterator<Item = &'a [u8]>) -> [u8; 24] {
    let mut sum = existing.and_then(decode).unwrap_or_default();
    for v in operands.filter_map(decode) {
        for i in 0..3 {
            sum[i] = sum[i].wrapping_add(v[i]);
        }
    }
    encode(&sum)
}

/// Reads a stored `u` entry.
pub fn decode_usage(k: &[u8], v: &[u8]) -> Option<HourUsage> {
    if k.len() != 25 || k[0] != b'u' {
        return None;
    }
    let c = decode(v)?;
    Some(HourUsage {
        hour: u32::from_be_bytes(k[17..21].try_into().ok()?),
        version: u32::from_be_bytes(k[21..25].try_into().ok()?),
        encryptions: c[0],
        data_keys: c[1],
        decryptions: c[2],
    })
}

/// Reads a stored `o`, `k` or `p` entry.
pub fn decode_outcome(k: &[u8], v: &[u8]) -> Option<HourOutcome> {
    let at = match k.first()? {
        b'o' => 1,
        b'k' => 17,
        b'p' => 2 + *k.get(1)? as usize,
        _ => return None,
    };
    let hour = u32::from_be_bytes(k.get(at..at + 4)?.try_into().ok()?);
    let len = *k.get(at + 4)? as usize;
    let op = k.get(at + 5..at + 5 + len)?;
    let outcome = k.get(at + 5 + len..)?;
    Some(HourOutcome {
        hour,
        operation: String::from_utf8(op.to_vec()).ok()?,
        outcome: String::from_utf8(outcome.to_vec()).ok()?,
        records: decode(v)?[0],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_read_back_and_sum() {
        let id = KeyId::from_bytes([7; 16]);
        let u = key(&RollupKey::Usage { key: id, hour: 500_000, version: 3 });
        assert!(u.starts_with(&range_start(b'u', Some(id), 500_000)));
        let read = decode_usage(&u, &encode(&[1, 2, 3])).unwrap();
        assert_eq!((read.hour, read.version, read.encryptions, read.decryptions), (500_000, 3, 1, 3));
        let o = key(&RollupKey::KeyOutcome {
            key: id,
            hour: 9,
            operation: "Encrypt".into(),
            outcome: "PERMISSION_DENIED".into(),
        });
        let read = decode_outcome(&o, &encode(&[4, 0, 0])).unwrap();
        assert_eq!(
            (read.hour, read.operation.as_str(), read.outcome.as_str(), read.records),
            (9, "Encrypt", "PERMISSION_DENIED", 4)
        );
        let sum = add(Some(&encode(&[1, 1, 1])), [&encode(&[2, 0, 5])[..], &[1, 2][..]].into_iter());
        assert_eq!(decode(&sum), Some([3, 1, 6]));
        assert_eq!(decode(&add(None, std::iter::empty())), Some([0, 0, 0]));
        let p = key(&RollupKey::PrincipalOutcome {
            principal: "ops-team".into(),
            hour: 70,
            operation: "SignIn".into(),
            outcome: "OK".into(),
        });
        assert!(p.starts_with(&outcomes_start(&OutcomesOf::Principal("ops-team".into()), 70)));
        assert!(
            !p.starts_with(&outcomes_start(&OutcomesOf::Principal("ops".into()), 70)),
            "lengths keep names apart"
        );
        let read = decode_outcome(&p, &encode(&[2, 0, 0])).unwrap();
        assert_eq!(
            (read.hour, read.operation.as_str(), read.outcome.as_str(), read.records),
            (70, "SignIn", "OK", 2)
        );
        // Hours sort as numbers.
        assert!(range_start(b'o', None, 255) < range_start(b'o', None, 256));
    }
}
