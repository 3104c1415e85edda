//! What a Stream Load reply means: done, in flight, retry with the same
//! label, or give up. A pure function of (HTTP status, reply), so every
//! status string of `starrocks-stream-load.md` §3.1/§6.1 has a unit test.
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
    /// Resending cannot help (bad data, bad credentials, client bug).
    Permanent { reason: String },
}

/// Messages that mean resending the same data cannot succeed.
const PERMANENT: [&str; 7] = [
    "too many filtered rows",
    "primary key size exceed the limit",
    "Only primary key table support partial update",
    "Access denied",
    "no valid Basic authorization",
    "There is no 100-continue header",
    "Label format error",
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

/// Classifies a Stream Load (or transaction API) reply.
pub fn classify(http_status: u16, reply: Option<LoadReply>) -> Outcome {
    let Some(r) = reply else {
        return match http_status {
            401 | 403 => Outcome::Permanent { reason: format!("HTTP {http_status}: authentication failed") },
            404 | 405 => Outcome::Permanent { reason: format!("HTTP {http_status}: no such Stream Load endpoint") },
            307 => Outcome::Retry { reason: "redirect not followed (FE busy?)".into(), backoff: Backoff::Normal },
            s => Outcome::Retry { reason: format!("HTTP {s} without a JSON reply"), backoff: Backoff::Normal },
        };
    };
    if http_status == 401 || http_status == 403 {
        return Outcome::Permanent { reason: format!("HTTP {http_status}: {}", r.message) };
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
            if let Some(p) = PERMANENT.iter().find(|p| msg.contains(*p)) {
                return Outcome::Permanent { reason: format!("{} ({p}): {msg}", r.status) };
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
    fn data_and_auth_errors_are_permanent() {
        for (code, s, m) in [
            (200, "Fail", "too many filtered rows"),
            (200, "Fail", "no valid Basic authorization"),
            (200, "Fail", "Access denied for user 'x'@'%' (using password: YES)"),
            (200, "FAILED", "class com.starrocks.common.DdlException: There is no 100-continue header"),
            (200, "Fail", "Only primary key table support partial update"),
            (401, "FAILED", "Need auth information."),
        ] {
            assert!(matches!(classify(code, reply(s, m, None)), Outcome::Permanent { .. }), "{s} {m}");
        }
        assert!(matches!(classify(401, None), Outcome::Permanent { .. }));
        assert!(matches!(classify(404, None), Outcome::Permanent { .. }));
    }

    #[test]
    fn empty_loads_are_a_no_op() {
        assert!(matches!(classify(200, reply("Fail", "all partitions have no load data", None)), Outcome::Done(_)));
    }
}
