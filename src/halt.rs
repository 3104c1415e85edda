//! The crash tests' halt hook: the process stops at a named step of a
//! protocol (the epoch coordinator, the WAL, the archive, the transaction
//! loader) so a test can kill it there. Inert unless the environment
//! variable is set.

use std::collections::BTreeMap;
use std::time::Duration;

/// Test hook: `ROCKFEED_TEST_HALT_AT=<step>:<n>` stops the process (it logs
/// the step and sleeps, to be killed) the n-th time it reaches `step`:
/// `after_prepare`, `before_note` (decided, not yet noted locally),
/// `after_decide`, `mid_commit` or `mid_reload` (a decided transaction
/// found aborted at commit, its rows loaded again, not yet prepared); in
/// the archive,
/// `archive_mid_frame` (half a spool frame written), `archive_after_seal`,
/// `archive_mid_upload` (file encoded, not published) and
/// `archive_after_publish` (published, spool segment not yet deleted).
#[derive(Debug, Default)]
pub struct Hook {
    at: Option<(String, u64)>,
    seen: BTreeMap<&'static str, u64>,
}

pub const HOOK_ENV: &str = "ROCKFEED_TEST_HALT_AT";

impl Hook {
    pub fn from_env() -> Hook {
        let at = std::env::var(HOOK_ENV).ok().and_then(|v| {
            let (s, n) = v.split_once(':')?;
            Some((s.to_string(), n.parse().ok()?))
        });
        Hook { at, seen: BTreeMap::new() }
    }

    /// [`Hook::reach`] for threads outside the runtime.
    pub fn reach_blocking(&mut self, step: &'static str) {
        if self.hits(step) {
            Hook::halt_blocking(step);
        }
    }

    /// Counts a visit of `step`; true when the hook halts here (the caller
    /// then does its partial work and calls [`Hook::halt_blocking`]).
    pub fn hits(&mut self, step: &'static str) -> bool {
        let Some((s, n)) = &self.at else { return false };
        if s != step {
            return false;
        }
        let c = self.seen.entry(step).or_default();
        *c += 1;
        *c == *n
    }

    pub fn halt_blocking(step: &str) -> ! {
        eprintln!("rockfeed test hook: halted at {step}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    pub async fn reach(&mut self, step: &'static str) {
        if self.hits(step) {
            Hook::halt(step).await;
        }
    }

    /// [`Hook::hits`] for a step reached from tasks without a hook of
    /// their own (one process-wide count).
    pub fn hits_anywhere(step: &'static str) -> bool {
        static HOOK: std::sync::LazyLock<parking_lot::Mutex<Hook>> =
            std::sync::LazyLock::new(|| parking_lot::Mutex::new(Hook::from_env()));
        HOOK.lock().hits(step)
    }

    /// [`Hook::halt_blocking`] inside the runtime.
    pub async fn halt(step: &str) -> ! {
        eprintln!("rockfeed test hook: halted at {step}");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}
