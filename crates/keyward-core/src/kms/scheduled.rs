//! Scheduled work: `run_due` finds what the clock has made due — keys whose
//! deletion window ended, versions whose destruction window ended, keys whose
//! rotation time has come — and carries each out as principal `system`
//! through the same audited lifecycle path as an administrator's change.

use super::keys::deletion_due;
use super::rotation::rotation_due;
use super::versions::destruction_due;
use super::{Caller, Kms};
use crate::{KeyId, KmsError};

tokio::task_local! {
    /// The fence of the sweeper leadership the scheduled work in this task
    /// runs under (cluster mode): its shared writes carry it.
    pub(super) static SWEEPER_FENCE: Option<crate::Revision>;
}

/// Scheduled work found by [`Kms::run_due`].
#[derive(Debug, Clone, Copy)]
enum Due {
    Rotate,
    DestroyKey,
    DestroyVersion(u32),
}

impl Kms {
    /// Carries out what is due at the clock's time: keys whose deletion
    /// window ended are destroyed (every version's material erased, metadata
    /// kept, the id never reused), versions whose destruction window ended
    /// lose their material, and enabled keys whose scheduled rotation time
    /// has passed (also while the server was down) rotate once, with the
    /// next rotation one period from now. Each is audited as principal
    /// `system`, and re-checked under the lifecycle lock before it is done.
    /// Returns how many were carried out. The server calls it at start-up
    /// and every minute.
    ///
    /// In cluster mode only the node that leads the sweeper does the key
    /// work (tokens are each node's own), and every write it makes is
    /// fenced on its leadership: once another node has taken over, a late
    /// write of this one fails and changes nothing.
    pub async fn run_due(&self) -> Result<usize, KmsError> {
        let now = self.clock.now_ms();
        let system = Caller::system(format!("system-{now}"));
        let mut done = self.purge_expired_tokens(&system, now).await?;
        let fence = match &self.cluster {
            None => None,
            Some(c) => match c.leading() {
                Some(f) => Some(f),
                None => return Ok(done),
            },
        };
        let due = self.find_due(now);
        done += SWEEPER_FENCE.scope(fence, self.run_jobs(&system, due)).await?;
        Ok(done)
    }

    async fn run_jobs(&self, system: &Caller, due: Vec<(KeyId, Due)>) -> Result<usize, KmsError> {
        let system = system.clone();
        let mut done = 0;
        for (id, what) in due {
            let result = match what {
                Due::Rotate => self.rotate_if_due(&system, id).await,
                Due::DestroyKey => self.destroy_key_if_due(&system, id).await,
                Due::DestroyVersion(v) => self.destroy_version_if_due(&system, id, v).await,
            };
            match result {
                Ok(_) => done += 1,
                Err(e) => {
                    tracing::error!(key = %id, due = ?what, error = %e, "scheduled work failed; will retry");
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Everything due at `now`, from the in-memory metadata.
    fn find_due(&self, now: i64) -> Vec<(KeyId, Due)> {
        let s = self.state.read().expect("state lock");
        let mut due = Vec::new();
        for (id, live) in &s.keys {
            let m = live.meta();
            if deletion_due(m, now) {
                due.push((*id, Due::DestroyKey));
                continue;
            }
            for v in m.versions.iter().filter(|v| destruction_due(v, now)) {
                due.push((*id, Due::DestroyVersion(v.version)));
            }
            if rotation_due(m, now) {
                due.push((*id, Due::Rotate));
            }
        }
        due
    }
}
