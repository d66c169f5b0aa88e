//! The server's wall clock: the system's, or, for tests of scheduled work
//! only, the system's moved by an offset read from a file
//! (`--dev --dev-clock-file F`, a hidden flag refused without `--dev`).
//!
//! Scheduled lifecycle work (rotation periods, destruction and deletion
//! windows) is due hours or days after it is set up; the binary's fault
//! tests make it due by writing a number of milliseconds into the file that
//! every node of a test cluster is given, and then kill or pause the
//! sweeper leader while it works.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use keyward_core::{Clock, SystemClock};

/// How often the offset file is read again.
const REREAD_EVERY: Duration = Duration::from_millis(100);

/// The clock the server gives its `Kms`.
pub(super) fn server_clock(dev_clock_file: Option<&Path>) -> Arc<dyn Clock> {
    match dev_clock_file {
        None => Arc::new(SystemClock),
        Some(path) => {
            tracing::warn!(
                file = %path.display(),
                "DEVELOPMENT CLOCK: this server's wall clock is moved by the milliseconds written in this file (for tests of scheduled work only)"
            );
            Arc::new(FileOffsetClock::follow(path.to_path_buf()))
        }
    }
}

/// The system clock plus the offset (whole milliseconds, possibly negative)
/// last read from a file; a missing, empty or unreadable file counts as 0.
#[derive(Debug)]
pub(super) struct FileOffsetClock {
    offset: Arc<AtomicI64>,
}

impl FileOffsetClock {
    /// Reads the file now, then every [`REREAD_EVERY`] on a thread of its
    /// own, which ends once the clock is dropped.
    fn follow(path: PathBuf) -> Self {
        let offset = Arc::new(AtomicI64::new(read_offset(&path)));
        let weak: Weak<AtomicI64> = Arc::downgrade(&offset);
        let spawned = std::thread::Builder::new().name("keyward-dev-clock".into()).spawn(move || loop {
            std::thread::sleep(REREAD_EVERY);
            let Some(offset) = weak.upgrade() else { return };
            offset.store(read_offset(&path), Ordering::Relaxed);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the development clock cannot follow its file; its offset stays as first read");
        }
        Self { offset }
    }
}

impl Clock for FileOffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.offset.load(Ordering::Relaxed))
    }
}

fn read_offset(path: &Path) -> i64 {
    std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_by_what_the_file_says_and_a_missing_or_bad_file_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        assert_eq!(read_offset(&path), 0, "missing");
        std::fs::write(&path, "not a number").unwrap();
        assert_eq!(read_offset(&path), 0, "unparsable");
        std::fs::write(&path, "-5\n").unwrap();
        assert_eq!(read_offset(&path), -5);

        let day = 86_400_000_i64;
        std::fs::write(&path, day.to_string()).unwrap();
        let clock = FileOffsetClock::follow(path.clone());
        let ahead = clock.now_ms() - SystemClock.now_ms();
        assert!((day - 1_000..=day).contains(&ahead), "{ahead}");
        std::fs::write(&path, (2 * day).to_string()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while clock.now_ms() - SystemClock.now_ms() < 2 * day - 1_000 {
            assert!(std::time::Instant::now() < deadline, "the file was not read again");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
