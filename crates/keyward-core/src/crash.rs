//! Crash points for fault tests: a process started with
//! `KEYWARD_CRASH_AT=<point>` aborts (no destructors, no flush, like a
//! SIGKILL) when it reaches that point, so a test can stop a multi-step
//! write exactly between two of its steps instead of guessing when to kill.
//!
//! Only with the `test-util` feature (which only dev-dependencies enable,
//! so test builds of the binary have it): a release build's crash points
//! are empty functions and the variable means nothing to it.

#[cfg(any(test, feature = "test-util"))]
use std::sync::OnceLock;

/// The environment variable naming the point to abort at.
pub const CRASH_AT_VAR: &str = "KEYWARD_CRASH_AT";

/// Aborts the process if `KEYWARD_CRASH_AT` names `point` (test builds).
#[cfg(any(test, feature = "test-util"))]
pub fn crash_point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT_VAR).ok().filter(|v| !v.is_empty()));
    if at.as_deref() == Some(point) {
        eprintln!("{CRASH_AT_VAR}={point}: aborting here");
        std::process::abort();
    }
}

/// A crash point of a release build: nothing.
#[cfg(not(any(test, feature = "test-util")))]
#[inline(always)]
pub fn crash_point(_point: &str) {}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unnamed_point_returns() {
        // The test process has no KEYWARD_CRASH_AT naming this point.
        super::crash_point("crash.rs:unit-test");
    }
}
