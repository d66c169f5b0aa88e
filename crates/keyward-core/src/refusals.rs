//! Refusals by peer, so a flood of unauthenticated or unauthorised requests
//! can neither fill the disk with audit records nor grow memory.
//!
//! Within one second (the clock's), the first [`REFUSALS_AUDITED_PER_SECOND`]
//! refusals of one kind — same peer IP, principal, operation and code — are
//! audited one by one as usual; the rest are only counted, and once the
//! second is over one summary record per kind says how many there were. The
//! table holds one second and at most [`REFUSAL_PEERS`] kinds; refusals of
//! a kind that no longer fits are counted under the peer
//! [`OTHER_PEERS`], so neither random source ports (the port is not part
//! of the kind) nor many addresses grow it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::{AuditEntry, Operation, Outcome};

/// Refusals of one kind (peer IP, principal, operation, code) audited one by
/// one in a second; the rest of that second are summarised in one record.
pub const REFUSALS_AUDITED_PER_SECOND: u32 = 10;
/// Most kinds counted in one second; the rest share [`OTHER_PEERS`].
pub const REFUSAL_PEERS: usize = 1024;
/// The peer a summary names when the table was full.
pub const OTHER_PEERS: &str = "(other peers)";

/// Whether a refusal is audited by itself or counted into its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write its record as usual.
    Audit,
    /// Counted; the second's summary records it.
    Counted,
}

/// (peer IP, principal, edge, operation name, code).
type Kind = (String, String, crate::Edge, &'static str, &'static str);

struct Tally {
    operation: Operation,
    refused: u32,
}

#[derive(Default)]
struct Second {
    second: i64,
    kinds: HashMap<Kind, Tally>,
}

/// The bounded per-second table; see the module documentation.
#[derive(Default)]
pub(crate) struct RefusalBook {
    now: Mutex<Second>,
}

impl std::fmt::Debug for RefusalBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalBook").finish_non_exhaustive()
    }
}

impl RefusalBook {
    /// Counts the refusal `entry` records (its outcome set). Returns whether
    /// to audit it by itself, and the summaries of a second that has ended.
    pub(crate) fn note(&self, entry: &AuditEntry) -> (Verdict, Vec<AuditEntry>) {
        let second = entry.time_ms.div_euclid(1000);
        let mut now = self.now.lock().expect("refusal book lock");
        // A refusal stamped just before a later one that got here first
        // counts in the later one's second (no going back, no split second).
        let ended = if second > now.second { drain(&mut now, second) } else { Vec::new() };
        let mut kind = (
            peer_ip(&entry.peer),
            entry.principal.clone(),
            entry.edge,
            entry.operation.as_str(),
            entry.outcome.code,
        );
        if !now.kinds.contains_key(&kind) && now.kinds.len() >= REFUSAL_PEERS {
            kind.0 = OTHER_PEERS.to_string();
        }
        let tally = now.kinds.entry(kind).or_insert(Tally { operation: entry.operation, refused: 0 });
        tally.refused = tally.refused.saturating_add(1);
        let verdict =
            if tally.refused <= REFUSALS_AUDITED_PER_SECOND { Verdict::Audit } else { Verdict::Counted };
        (verdict, ended)
    }

    /// The summaries of every second before `until_ms`'s, and an empty table.
    pub(crate) fn flush(&self, until_ms: i64) -> Vec<AuditEntry> {
        let second = until_ms.div_euclid(1000);
        let mut now = self.now.lock().expect("refusal book lock");
        if now.second < second {
            drain(&mut now, second)
        } else {
            Vec::new()
        }
    }
}

/// Empties the table for `next`, returning the summaries of what it held.
fn drain(now: &mut Second, next: i64) -> Vec<AuditEntry> {
    let ended = std::mem::replace(now, Second { second: next, kinds: HashMap::new() });
    let mut out: Vec<AuditEntry> = ended
        .kinds
        .into_iter()
        .filter(|(_, t)| t.refused > REFUSALS_AUDITED_PER_SECOND)
        .map(|((peer, principal, edge, _, code), t)| {
            let n = t.refused - REFUSALS_AUDITED_PER_SECOND;
            AuditEntry {
                time_ms: ended.second * 1000,
                request_id: crate::new_request_id(),
                principal,
                peer,
                edge,
                operation: t.operation,
                key_id: None,
                key_version: None,
                alias: None,
                source_key_id: None,
                source_key_version: None,
                target: None,
                context: Default::default(),
                outcome: Outcome {
                    code,
                    reason: format!("{n} refusals from this peer in this second (aggregated)"),
                },
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.peer, &a.principal, a.operation.as_str()).cmp(&(&b.peer, &b.principal, b.operation.as_str()))
    });
    out
}

/// The IP of `peer` (`ip:port`), or `peer` itself if it is not one.
fn peer_ip(peer: &str) -> String {
    peer.parse::<SocketAddr>().map_or_else(|_| peer.to_string(), |a| a.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(time_ms: i64, peer: &str) -> AuditEntry {
        AuditEntry {
            time_ms,
            request_id: "r".into(),
            principal: "unauthenticated".into(),
            peer: peer.into(),
            edge: crate::Edge::Grpc,
            operation: Operation::Encrypt,
            key_id: None,
            key_version: None,
            alias: None,
            source_key_id: None,
            source_key_version: None,
            target: None,
            context: Default::default(),
            outcome: Outcome { code: "UNAUTHENTICATED", reason: "no credentials".into() },
        }
    }

    #[test]
    fn over_the_threshold_a_second_is_summarised_per_peer_ip() {
        let book = RefusalBook::default();
        let mut audited = 0;
        for i in 0..25 {
            // Another source port each time: still the same peer.
            let (v, ended) = book.note(&refusal(5_000 + i, &format!("10.0.0.1:{}", 40000 + i)));
            assert!(ended.is_empty());
            audited += usize::from(v == Verdict::Audit);
        }
        assert_eq!(audited, REFUSALS_AUDITED_PER_SECOND as usize);
        // Below the threshold, another peer is audited one by one, no summary.
        for _ in 0..3 {
            assert_eq!(book.note(&refusal(5_500, "10.0.0.2:1")).0, Verdict::Audit);
        }
        // The next second's first refusal brings the summary of this one.
        let (v, ended) = book.note(&refusal(6_000, "10.0.0.1:1"));
        assert_eq!(v, Verdict::Audit);
        assert_eq!(ended.len(), 1);
        let s = &ended[0];
        assert_eq!(
            (s.peer.as_str(), s.principal.as_str(), s.operation, s.time_ms),
            ("10.0.0.1", "unauthenticated", Operation::Encrypt, 5_000)
        );
        assert_eq!(s.outcome.code, "UNAUTHENTICATED");
        assert_eq!(s.outcome.reason, "15 refusals from this peer in this second (aggregated)");
        // A refusal stamped in second 5 that arrives late counts in second 6.
        assert_eq!(book.note(&refusal(5_999, "10.0.0.1:1")).0, Verdict::Audit);
        assert_eq!(book.now.lock().unwrap().kinds.values().map(|t| t.refused).sum::<u32>(), 2);
        // Nothing over the threshold in second 6: the flush has nothing to say.
        assert!(book.flush(9_000).is_empty());
    }

    #[test]
    fn many_peers_share_one_bucket_once_the_table_is_full() {
        let book = RefusalBook::default();
        for i in 0..REFUSAL_PEERS + 500 {
            let ip = format!("10.{}.{}.{}:5", i >> 16, (i >> 8) & 255, i & 255);
            for _ in 0..=REFUSALS_AUDITED_PER_SECOND {
                book.note(&refusal(1_000, &ip));
            }
        }
        assert_eq!(book.now.lock().unwrap().kinds.len(), REFUSAL_PEERS + 1);
        let ended = book.flush(2_000);
        // One summary per peer that fitted, plus one for the rest.
        assert_eq!(ended.len(), REFUSAL_PEERS + 1);
        let other = ended.iter().find(|e| e.peer == OTHER_PEERS).unwrap();
        let n = 500 * (REFUSALS_AUDITED_PER_SECOND as usize + 1) - REFUSALS_AUDITED_PER_SECOND as usize;
        assert_eq!(other.outcome.reason, format!("{n} refusals from this peer in this second (aggregated)"));
        assert!(book.now.lock().unwrap().kinds.is_empty());
    }
}
