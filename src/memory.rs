//! Giving memory back after use: on a small board the private memory a server keeps
//! when it is idle again is what no other process can have. A [`Live`] guard, held by
//! every WebSocket session task, counts the sessions; when the last one ends, the
//! allocator's free pages are returned to the system (glibc's `malloc_trim`; other C
//! libraries keep their own policy). It owns that policy, nothing else.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Sessions running in this process, counted by [`Live`].
static LIVE_SESSIONS: AtomicUsize = AtomicUsize::new(0);
/// Whether a [`trim_when_idle`] check is already waiting.
#[cfg(target_env = "gnu")]
static TRIM_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// How long after the session count falls to zero the trim waits: at most one trim per
/// this interval, however often a busy server's count touches zero.
#[cfg(target_env = "gnu")]
const TRIM_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Held by a session task: counts it in [`LIVE_SESSIONS`]; the last one dropped calls
/// [`trim_when_idle`]. (A guard inside the task rather than an async wrapper around it,
/// which would hold the session future twice: 1.1 KiB more per connection.)
pub struct Live(());

impl Live {
    pub fn count() -> Self {
        LIVE_SESSIONS.fetch_add(1, Ordering::SeqCst);
        Live(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if LIVE_SESSIONS.fetch_sub(1, Ordering::SeqCst) == 1 {
            trim_when_idle();
        }
    }
}

// glibc's malloc keeps what a peak of sessions freed for reuse (about 10 MiB of private
// memory after 1000 connections, ~10 KiB each): on a small board that is memory no other
// process can have and the kernel cannot drop. When no session is left, hand the free
// pages back (`malloc_trim` returns them from every arena, not only the heap's top). The
// check waits TRIM_DELAY and at most one waits at a time, so a server whose count falls
// to zero between connections trims at most once a second, never per connection; if the
// count is above zero again by then, the next fall to zero schedules another.
// (BENCHMARKS.md: "private memory after use".)
fn trim_when_idle() {
    #[cfg(target_env = "gnu")]
    if !TRIM_PENDING.swap(true, Ordering::SeqCst) {
        // Not from a runtime (a task dropped after its runtime): nothing to schedule on.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            TRIM_PENDING.store(false, Ordering::SeqCst);
            return;
        };
        rt.spawn(async {
            tokio::time::sleep(TRIM_DELAY).await;
            // Cleared before the count is read: a fall to zero after this line schedules
            // a check of its own.
            TRIM_PENDING.store(false, Ordering::SeqCst);
            if LIVE_SESSIONS.load(Ordering::SeqCst) == 0 {
                // About 2 ms after a 1000-connection peak: off the async workers.
                // SAFETY: malloc_trim has no preconditions; it takes the arenas' locks.
                let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            }
        });
    }
}
