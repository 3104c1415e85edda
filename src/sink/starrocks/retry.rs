//! What a Stream Load reply means: done, in flight, retry with the same
//! label, refused because of the rows, or refused because of the
//! destination. A pure function of (HTTP status, reply), so every status
//! string of `starrocks-stream-load.md` §3.1/§6.1 has a unit test.
//!
//! Errors about the destination are not errors about the data: bad
//! credentials, an unknown database, table or column, a table model that
//! does not fit, a refused request are [`Outcome::Destination`] — the
//! caller waits and retries (`telemetry::health`), the data is never dead-lettered.
//! Only `too many filtered rows` and `primary key size exceed the limit`
//! are about the rows themselves ([`Outcome::Rejected`]).
//!
//! The rule that matters (Flink connector issue #511): *only* an explicit
//! success counts. `Success`, `Publish Timeout` (committed, visible later),
//! `Label Already Exists` with `FINISHED`, and `OK` from the transaction API
//! are done; every other status, including the FE's `FAILED`, is not.
//!
//! Retry hints follow the Flink SDK's `ErrorUtils.isRetryable`, with one
//! deliberate difference: `current running txns on db` is retried with a long
//! back-off instead of failing, because rockfeed's labels are deterministic and
//! a retry can never duplicate data.

use super::response::LoadReply;
use crate::telemetry::health::Trouble;

/// How long to back off before retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Transient: exponential from the base delay.
    Normal,
    /// The cluster asks for less load (`too many versions`, memory, running
    /// transactions, HTTP concurrency): exponential from a longer base.
    Throttle,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The data is (or will become, for `Publish Timeout`) visible.
    Done(LoadReply),
    /// An earlier attempt with this label landed (`FINISHED`).
    AlreadyLoaded(LoadReply),
    /// An attempt with this label is still running: poll `get_load_state`,
    /// never resend under a new label.
    InFlight(LoadReply),
    /// Resend the identical batch under the same label after a back-off.
    Retry { reason: String, backoff: Backoff },
    /// StarRocks refuses these rows for what they contain: resending them
    /// cannot help; they go to dead letters, replayable.
    Rejected { reason: String },
    /// StarRocks refuses rockfeed's requests (credentials, schema, a
    /// malformed request): nothing about the rows. Wait and retry.
    Destination { reason: String, trouble: Trouble },
}

/// Messages that mean these rows can never load.
const REJECTED: [&str; 2] = ["too many filtered rows", "primary key size exceed the limit"];

/// Messages about the destination, and what kind of trouble they are.
const DESTINATION: [(&str, Trouble); 11] = [
    ("Access denied", Trouble::Auth),
    ("no valid Basic authorization", Trouble::Auth),
    ("Only primary key table support partial update", Trouble::Schema),
    ("Unknown table", Trouble::Schema),
    ("unknown database", Trouble::Schema),
    ("No database selected", Trouble::Schema),
    ("Unknown column", Trouble::Schema),
    ("does not exist", Trouble::Schema),
    ("Unknown database", Trouble::Schema),
    ("There is no 100-continue header", Trouble::Client),
    ("Label format error", Trouble::Client),
];

/// Messages that mean "send less, later".
const THROTTLE: [&str; 6] = [
    "too many versions",
    "current running txns on db",
    "exceed http cuncurrent limit",
    "Memory of process exceed limit",
    "Mem usage has exceed the limit",
    "mem limit exceeded",
];

/// Whether a message asks for less load (see [`Backoff::Throttle`]).
pub fn is_throttle(msg: &str) -> bool {
    THROTTLE.iter().any(|p| msg.contains(*p))
}

/// The destination trouble a message names, if any.
pub fn destination_trouble(msg: &str) -> Option<Trouble> {
    DESTINATION.iter().find(|(p, _)| msg.contains(*p)).map(|(_, t)| *t)
}

/// Classifies a Stream Load (or transaction API) reply.
pub fn classify(http_status: u16, reply: Option<LoadReply>) -> Outcome {
    let Some(r) = reply else {
        return match http_status {
            401 | 403 => Outcome::Destination {
                reason: format!("HTTP {http_status}: authentication failed"),
                trouble: Trouble::Auth,
            },
            404 | 405 => Outcome::Destination {
                reason: format!("HTTP {http_status}: no such Stream Load endpoint"),
                trouble: Trouble::Config,
            },
            307 => Outcome::Retry { reason: "redirect not followed (FE busy?)".into(), backoff: Backoff::Normal },
            s => Outcome::Retry { reason: format!("HTTP {s} without a JSON reply"), backoff: Backoff::Normal },
        };
    };
    if http_status == 401 || http_status == 403 {
        return Outcome::Destination { reason: format!("HTTP {http_status}: {}", r.message), trouble: Trouble::Auth };
    }
    match r.status.as_str() {
        "Success" | "OK" | "Publish Timeout" | "PUBLISH_TIMEOUT" => Outcome::Done(r),
        "Label Already Exists" | "LABEL_ALREADY_EXISTS" => match r.existing_job_status.as_deref() {
            Some("FINISHED") => Outcome::AlreadyLoaded(r),
            _ => Outcome::InFlight(r),
        },
        _ => {
            let msg = &r.message;
            if msg.contains("all partitions have no load data") {
                // An empty load (Flink #136): nothing to do, nothing lost.
                return Outcome::Done(r);
            }
            if let Some(p) = REJECTED.iter().find(|p| msg.contains(*p)) {
                return Outcome::Rejected { reason: format!("{} ({p}): {msg}", r.status) };
            }
            if let Some((p, trouble)) = DESTINATION.iter().find(|(p, _)| msg.contains(*p)) {
                return Outcome::Destination { reason: format!("{} ({p}): {msg}", r.status), trouble: *trouble };
            }
            let backoff = if THROTTLE.iter().any(|t| msg.contains(t)) { Backoff::Throttle } else { Backoff::Normal };
            Outcome::Retry {
                reason: format!("{}: {msg}", if r.status.is_empty() { "no status" } else { &r.status }),
                backoff,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: &str, msg: &str, existing: Option<&str>) -> Option<LoadReply> {
        Some(LoadReply {
            status: status.into(),
            message: msg.into(),
            existing_job_status: existing.map(str::to_string),
            ..Default::default()
        })
    }

    #[test]
    fn only_explicit_successes_are_done() {
        assert!(matches!(classify(200, reply("Success", "OK", None)), Outcome::Done(_)));
        assert!(matches!(classify(200, reply("Publish Timeout", "publish timeout", None)), Outcome::Done(_)));
        assert!(matches!(classify(200, reply("OK", "", None)), Outcome::Done(_)));
        assert!(matches!(classify(200, reply("PUBLISH_TIMEOUT", "", None)), Outcome::Done(_)));
    }

    #[test]
    fn fe_failed_is_never_success() {
        // Flink connector #511: `No backend alive.` with Status FAILED lost data.
        let o = classify(200, reply("FAILED", "class com.starrocks.common.DdlException: No backend alive.", None));
        assert!(matches!(o, Outcome::Retry { backoff: Backoff::Normal, .. }), "{o:?}");
    }

    #[test]
    fn label_already_exists_depends_on_the_existing_job() {
        assert!(matches!(
            classify(200, reply("Label Already Exists", "", Some("FINISHED"))),
            Outcome::AlreadyLoaded(_)
        ));
        assert!(matches!(classify(200, reply("Label Already Exists", "", Some("RUNNING"))), Outcome::InFlight(_)));
        assert!(matches!(classify(200, reply("LABEL_ALREADY_EXISTS", "", None)), Outcome::InFlight(_)));
    }

    #[test]
    fn throttling_errors_back_off_longer() {
        for m in [
            "Failed to load data into tablet 1, because of too many versions, current/limit: 1001/1000",
            "current running txns on db 10001 is 100, larger than limit 100",
            "Stream Load exceed http cuncurrent limit 100, please try again later",
            "Memory of process exceed limit. QUERY Backend",
        ] {
            assert!(
                matches!(classify(200, reply("Fail", m, None)), Outcome::Retry { backoff: Backoff::Throttle, .. }),
                "{m}"
            );
        }
    }

    #[test]
    fn transient_failures_retry_with_the_same_label() {
        for (s, m) in [
            ("Fail", "Commit transaction fail cause x, Transaction status unknown, you can retry with same label."),
            ("Fail", "Service is shutting down, please retry later!"),
            ("TXN_IN_PROCESSING", "Transaction with label l is in processing"),
            ("INTERNAL_ERROR", "something broke"),
            ("Fail", ""),
        ] {
            assert!(
                matches!(classify(200, reply(s, m, None)), Outcome::Retry { backoff: Backoff::Normal, .. }),
                "{s} {m}"
            );
        }
        assert!(matches!(classify(502, None), Outcome::Retry { .. }));
        assert!(matches!(classify(307, None), Outcome::Retry { .. }));
    }

    #[test]
    fn only_errors_about_the_rows_reject_them() {
        for m in ["too many filtered rows", "primary key size exceed the limit 128"] {
            assert!(matches!(classify(200, reply("Fail", m, None)), Outcome::Rejected { .. }), "{m}");
        }
    }

    #[test]
    fn errors_about_the_destination_are_not_errors_about_the_data() {
        for (code, s, m, want) in [
            (200, "Fail", "no valid Basic authorization", Trouble::Auth),
            (200, "Fail", "Access denied for user 'x'@'%' (using password: YES)", Trouble::Auth),
            (401, "FAILED", "Need auth information.", Trouble::Auth),
            (
                200,
                "FAILED",
                "class com.starrocks.common.DdlException: There is no 100-continue header",
                Trouble::Client,
            ),
            (200, "Fail", "Only primary key table support partial update", Trouble::Schema),
            (200, "FAILED", "unknown database, database=nope", Trouble::Schema),
            (200, "INTERNAL_ERROR", "Unknown table 'telemetry_1m'", Trouble::Schema),
            (200, "Fail", "Unknown column 'fleet' in expression of column 'fleet'", Trouble::Schema),
        ] {
            match classify(code, reply(s, m, None)) {
                Outcome::Destination { trouble, .. } => assert_eq!(trouble, want, "{m}"),
                o => panic!("{m}: {o:?}"),
            }
        }
        assert!(matches!(classify(401, None), Outcome::Destination { trouble: Trouble::Auth, .. }));
        assert!(matches!(classify(404, None), Outcome::Destination { trouble: Trouble::Config, .. }));
    }

    #[test]
    fn empty_loads_are_a_no_op() {
        assert!(matches!(classify(200, reply("Fail", "all partitions have no load data", None)), Outcome::Done(_)));
    }
}
