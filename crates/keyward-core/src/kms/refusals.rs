//! Auditing refusals without letting a flood of them fill the disk: see
//! [`crate::refusals`]. `finish` and `refuse` write every record through
//! [`Kms::record`]; the sweeper calls [`Kms::flush_refusals`] every second.

use futures_util::future::join_all;

use super::Kms;
use crate::refusals::Verdict;
use crate::{AuditEntry, AuditError, ErrorKind};

impl Kms {
    /// Makes `entry` durable, unless it is an unauthenticated, unauthorised
    /// or rate-limited refusal past the per-peer threshold of its second: then
    /// it is only counted, and the second's summary records it. Summaries of
    /// a second that has ended are written alongside.
    pub(super) async fn record(&self, entry: AuditEntry) -> Result<(), AuditError> {
        let code = entry.outcome.code;
        let aggregated =
            [ErrorKind::Unauthenticated, ErrorKind::PermissionDenied, ErrorKind::ResourceExhausted];
        if !aggregated.iter().any(|k| k.code_name() == code) {
            return self.audit.append(entry).await.map(drop);
        }
        let (verdict, ended) = self.refusals.note(&entry);
        self.write_summaries(ended).await;
        match verdict {
            Verdict::Audit => self.audit.append(entry).await.map(drop),
            Verdict::Counted => Ok(()),
        }
    }

    /// Writes the refusal summaries of every second that has ended, and
    /// with `current` also the one still running (the server calls this
    /// every second, and with `current` once at shutdown).
    pub async fn flush_refusals(&self, current: bool) {
        let until = if current { i64::MAX } else { self.clock.now_ms() };
        let ended = self.refusals.flush(until);
        self.write_summaries(ended).await;
    }

    /// All in one batch; a summary that cannot be written is logged (the
    /// refusals it counts were refused all the same).
    async fn write_summaries(&self, summaries: Vec<AuditEntry>) {
        if summaries.is_empty() {
            return;
        }
        let n = summaries.len();
        let failed = join_all(summaries.into_iter().map(|e| self.audit.append(e)))
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        if failed > 0 {
            tracing::error!(failed, of = n, "refusal summaries could not be audited");
        }
    }
}
