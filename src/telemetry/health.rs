//! Whether StarRocks takes rockfeed's loads: one episode at a time.
//!
//! Errors about the destination are not errors about the data. A wrong
//! password, a missing table, StarRocks away or throttling: the data waits
//! (in Kafka, or in the MQTT WAL and then the broker) and the loads are
//! retried under their labels until StarRocks takes them again. While that
//! lasts, `/ready` answers 503 with the reason.
//!
//! An episode starts at the first destination error, or at the third
//! consecutive transient failure (one lost reply is not an outage). It is
//! logged once, at ERROR, with what to do, and ends at the next success,
//! logged once at INFO with its length. Attempts in between log at DEBUG.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// What kind of trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// Credentials refused (HTTP 401/403, `Access denied`, no Basic auth).
    Auth,
    /// Database, table, endpoint or column unknown; a table model that
    /// does not fit (partial update on a non-primary-key table).
    Schema,
    /// rockfeed's request was refused as malformed (a rockfeed bug).
    Client,
    /// TLS or endpoint configuration.
    Config,
    /// Unreachable, timing out, failing: transient, retried.
    Unavailable,
}

impl Trouble {
    /// What an operator should do.
    pub fn hint(self) -> &'static str {
        match self {
            Trouble::Auth => {
                "check starrocks.user and the password (ROCKFEED_STARROCKS_PASSWORD), and that the user has INSERT on the tables"
            }
            Trouble::Schema => {
                "check starrocks.database and the tables: create them with the statements `rockfeed ddl` prints"
            }
            Trouble::Client => {
                "StarRocks refused rockfeed's request as malformed: please report this with the log line"
            }
            Trouble::Config => "check starrocks.endpoints and starrocks.tls_ca_file",
            Trouble::Unavailable => "StarRocks is unreachable or failing; rockfeed retries until it answers",
        }
    }
}

#[derive(Debug)]
struct Down {
    since: Instant,
    trouble: Trouble,
    reason: String,
}

/// The destination's state, shared by every loader of one pipeline.
#[derive(Debug, Default)]
pub struct Health {
    down: Mutex<Option<Down>>,
    /// Consecutive transient failures since the last success.
    streak: AtomicU64,
    /// Episodes since start.
    pub episodes: AtomicU64,
}

impl Health {
    /// A failed attempt. Returns whether an episode is on (callers then log
    /// their per-attempt lines at DEBUG).
    pub fn failure(&self, trouble: Trouble, reason: &str) -> bool {
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        if trouble == Trouble::Unavailable && streak < 3 {
            return self.down.lock().is_some();
        }
        let mut d = self.down.lock();
        if d.is_none() {
            self.episodes.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%reason, ?trouble, hint = trouble.hint(), "StarRocks does not take loads: loading waits, nothing is dead-lettered for it (Kafka: the data stays in the topic; MQTT: it goes on into the WAL, up to wal.max_bytes), and /ready answers 503 until it does.");
            *d = Some(Down { since: Instant::now(), trouble, reason: reason.to_string() });
        } else if let Some(x) = d.as_mut() {
            x.trouble = trouble;
            x.reason = reason.to_string();
        }
        true
    }

    /// A successful call: ends an episode.
    pub fn success(&self) {
        self.streak.store(0, Ordering::Relaxed);
        let mut d = self.down.lock();
        if let Some(x) = d.take() {
            tracing::info!(after = ?x.since.elapsed(), trouble = ?x.trouble, "StarRocks takes loads again; intake resumes.");
        }
    }

    /// The current episode's reason, with its hint.
    pub fn down(&self) -> Option<String> {
        self.down.lock().as_ref().map(|x| format!("{} ({})", x.reason, x.trouble.hint()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_starts_at_a_destination_error_or_the_third_transient_one_and_ends_at_a_success() {
        let h = Health::default();
        assert!(!h.failure(Trouble::Unavailable, "reset"));
        assert!(!h.failure(Trouble::Unavailable, "reset"));
        assert!(h.down().is_none(), "two lost replies are not an outage");
        assert!(h.failure(Trouble::Unavailable, "connection refused"));
        assert!(h.down().unwrap().contains("connection refused"));
        h.success();
        assert!(h.down().is_none());
        assert!(h.failure(Trouble::Auth, "HTTP 401"), "one auth error is enough");
        assert!(h.down().unwrap().contains("ROCKFEED_STARROCKS_PASSWORD"));
        assert_eq!(h.episodes.load(Ordering::Relaxed), 2);
    }
}
