//! Keeps key material inside the process: no core dumps, no ptrace attach by
//! other processes of the same user, and memory locked out of swap where the
//! OS allows. Applied by the `keyward server` binary at start (not by the
//! library, so tests and embedders choose for themselves).

#![expect(
    unsafe_code,
    reason = "the only unsafe code in Keyward: libc calls with no pointers passed \
              except a valid, initialised `rlimit` or `sched_param` struct"
)]

/// Applies every measure it can and logs what it could not.
pub fn apply() {
    // PR_SET_DUMPABLE=0: no core dumps, and /proc/<pid>/mem and ptrace attach
    // are refused to non-root processes.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not disable core dumps / ptrace (PR_SET_DUMPABLE)");
    }
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `zero` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not set RLIMIT_CORE to 0");
    }
    // Lock every page (current and future) so unsealed master keys never
    // reach swap. Needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK; without
    // it Keyward runs on, and says so. MCL_ONFAULT (Linux 4.4): a page is
    // locked when first touched, not when mapped, so address space reserved
    // and never used (mimalloc reserves a 1 GiB arena, thread stacks their
    // full size) does not become resident: without it a node's RSS starts
    // at about 1.2 GB. Kernels without it (EINVAL) lock as mapped.
    // SAFETY: mlockall takes flags only.
    let onfault = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    // SAFETY: as above.
    if onfault != 0 && unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lock memory (mlockall): key pages may be swapped; grant CAP_IPC_LOCK or raise LimitMEMLOCK"
        );
    } else {
        tracing::info!("memory locked (mlockall): key pages stay out of swap");
    }
}

/// Puts the calling thread (the audit writer) in the `SCHED_BATCH` class:
/// when it is woken it does not preempt the thread serving requests, but
/// runs when that thread waits or its time slice ends, with its fair share
/// of the core as before. Where the two share a core, the request thread
/// then hands the writer a batch of what it finished instead of being
/// interrupted at every wake-up: measured on one core, twice the records per
/// synced write and about a fifth less CPU per durable request (README
/// "Benchmark"). Where the writer has a core of its own, nothing changes.
/// A failure is logged, and the writer runs in the normal class.
pub fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the
    // call; pid 0 names the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not put the audit writer in SCHED_BATCH; it keeps the normal class"
        );
    }
}
