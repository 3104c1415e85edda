//! Fault injection: rules switched on at runtime over `POST /_emulator/faults`.
//!
//! A rule names a fault and a scope: the next N matching requests, every
//! request for one label, or a percentage of requests (`always` is 100%).
//! Each fault fires at one point of the protocol (`FaultKind::point`), so a
//! rule for a BE-side fault never consumes FE requests. JSON form:
//! `{"fault": "too_many_versions", "next": 3}`,
//! `{"fault": "publish_timeout", "label": "l1", "delay_ms": 2000}`,
//! `{"fault": "reset_mid_body", "percent": 10}`.

use parking_lot::Mutex;
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// BE write: `too many versions` (regardless of the real version count).
    TooManyVersions,
    /// BE write: memory limit exceeded.
    MemLimit,
    /// BE header: `Stream Load exceed http cuncurrent limit`.
    HttpConcurrencyLimit,
    /// BE header: `Service is shutting down, please retry later!`.
    ShuttingDown,
    /// BE commit RPC fails at the transport level, but the commit happened.
    CommitUnknownCommitted,
    /// BE commit RPC fails at the transport level, and the txn was aborted.
    CommitUnknownAborted,
    /// Commit succeeds, publish is late: `Publish Timeout`, visible after `delay_ms`.
    PublishTimeout,
    /// BE: the connection is dropped after half the body was read.
    ResetMidBody,
    /// BE: `100 Continue` is sent only after `delay_ms`.
    Slow100Continue,
    /// BE txn API: the label's context disappears before `prepare` (TXN_NOT_EXISTS).
    ContextLost,
    /// BE txn API: the label's context is busy (TXN_IN_PROCESSING).
    TxnInProcessing,
    /// BE txn API: the emulator "crashes" right after a prepare became
    /// durable: BE contexts are lost and the connection drops without a reply.
    CrashAfterPrepare,
    /// Txn API commit: the PREPARED transaction is aborted just before the
    /// commit reaches it (its prepared timeout ran out, or an operator
    /// rolled it back), so the commit answers that it cannot commit an
    /// ABORTED transaction.
    AbortedBeforeCommit,
    /// FE: `No backend alive.` (HTTP 200, Status FAILED).
    NoBackendAlive,
    /// FE: 307 back to the FE itself, forever.
    RedirectLoop,
    /// FE: 307 to an address where nothing listens.
    RedirectUnreachable,
    /// FE: 401 even with good credentials.
    Unauthorized,
}

/// Where in the protocol a fault is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// FE, before the redirect of a load or txn call.
    FeRedirect,
    /// FE auth check.
    FeAuth,
    /// BE, on receiving headers of a load.
    BeHeader,
    /// BE, while reading the body.
    BeBody,
    /// BE, when writing rows (before commit/prepare).
    BeWrite,
    /// BE stream load commit.
    BeCommit,
    /// BE txn API, before a prepare runs.
    BeBeforePrepare,
    /// BE txn API, after a prepare became durable.
    BeAfterPrepare,
    /// FE txn API, when a commit reaches a PREPARED transaction.
    TxnCommit,
}

impl FaultKind {
    pub fn point(&self) -> Point {
        use FaultKind::*;
        match self {
            TooManyVersions | MemLimit => Point::BeWrite,
            HttpConcurrencyLimit | ShuttingDown | TxnInProcessing => Point::BeHeader,
            CommitUnknownCommitted | CommitUnknownAborted | PublishTimeout => Point::BeCommit,
            ResetMidBody | Slow100Continue => Point::BeBody,
            ContextLost => Point::BeBeforePrepare,
            CrashAfterPrepare => Point::BeAfterPrepare,
            AbortedBeforeCommit => Point::TxnCommit,
            NoBackendAlive | RedirectLoop | RedirectUnreachable => Point::FeRedirect,
            Unauthorized => Point::FeAuth,
        }
    }
}

/// A rule as posted to the admin endpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Which fault.
    pub fault: FaultKind,
    /// Fire on the next N matching requests, then disarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
    /// Fire on every request for this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Fire on this percentage (0–100) of matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Fire on every matching request until cleared.
    #[serde(default)]
    pub always: bool,
    /// Delay for `publish_timeout` and `slow_100_continue` (default 2000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Only for requests on this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl FaultRule {
    pub fn validate(&self) -> Result<(), String> {
        let scopes = [self.next.is_some(), self.label.is_some(), self.percent.is_some(), self.always];
        if scopes.iter().filter(|s| **s).count() != 1 {
            return Err("a fault rule needs exactly one of next, label, percent, always".into());
        }
        if let Some(p) = self.percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err("percent must be within 0..100".into());
        }
        Ok(())
    }
}

/// A fault that fired, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub kind: FaultKind,
    pub delay_ms: u64,
}

/// The armed rules.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    fired: Mutex<Vec<(FaultKind, Option<String>)>>,
}

impl Faults {
    pub fn add(&self, rule: FaultRule) -> Result<(), String> {
        rule.validate()?;
        self.rules.lock().push(rule);
        Ok(())
    }

    pub fn clear(&self) {
        self.rules.lock().clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().clone()
    }

    /// Faults that fired so far (kind, label), for tests and stats.
    pub fn fired(&self) -> Vec<(FaultKind, Option<String>)> {
        self.fired.lock().clone()
    }

    /// The first armed fault at `point` that matches this request, consuming
    /// one use of a `next` rule.
    pub fn check(&self, point: Point, label: Option<&str>, table: Option<&str>) -> Option<Fired> {
        let mut rules = self.rules.lock();
        let mut hit = None;
        for (i, r) in rules.iter_mut().enumerate() {
            if r.fault.point() != point {
                continue;
            }
            if let Some(t) = &r.table
                && table.is_none_or(|x| !x.eq_ignore_ascii_case(t))
            {
                continue;
            }
            let fires = if let Some(n) = r.next.as_mut() {
                if *n > 0 {
                    *n -= 1;
                    true
                } else {
                    false
                }
            } else if let Some(l) = &r.label {
                label == Some(l.as_str())
            } else if let Some(p) = r.percent {
                rand::rng().random::<f64>() * 100.0 < p
            } else {
                r.always
            };
            if fires {
                hit = Some((i, Fired { kind: r.fault, delay_ms: r.delay_ms.unwrap_or(2000) }));
                break;
            }
        }
        rules.retain(|r| r.next != Some(0));
        let (_, fired) = hit?;
        self.fired.lock().push((fired.kind, label.map(str::to_string)));
        Some(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> FaultRule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn next_n_fires_n_times_then_disarms() {
        let f = Faults::default();
        f.add(rule(r#"{"fault":"too_many_versions","next":2}"#)).unwrap();
        assert!(f.check(Point::BeHeader, None, None).is_none(), "other points do not consume it");
        assert_eq!(f.check(Point::BeWrite, None, None).unwrap().kind, FaultKind::TooManyVersions);
        assert!(f.check(Point::BeWrite, None, None).is_some());
        assert!(f.check(Point::BeWrite, None, None).is_none());
        assert!(f.list().is_empty());
    }

    #[test]
    fn label_rules_fire_only_for_their_label() {
        let f = Faults::default();
        f.add(rule(r#"{"fault":"publish_timeout","label":"l1","delay_ms":50}"#)).unwrap();
        assert!(f.check(Point::BeCommit, Some("l2"), None).is_none());
        assert_eq!(
            f.check(Point::BeCommit, Some("l1"), None),
            Some(Fired { kind: FaultKind::PublishTimeout, delay_ms: 50 })
        );
        assert!(f.check(Point::BeCommit, Some("l1"), None).is_some(), "label rules stay armed");
    }

    #[test]
    fn percent_zero_and_hundred() {
        let f = Faults::default();
        f.add(rule(r#"{"fault":"mem_limit","percent":0}"#)).unwrap();
        assert!((0..100).all(|_| f.check(Point::BeWrite, None, None).is_none()));
        f.clear();
        f.add(rule(r#"{"fault":"mem_limit","percent":100,"table":"t"}"#)).unwrap();
        assert!(f.check(Point::BeWrite, None, Some("other")).is_none());
        assert!((0..100).all(|_| f.check(Point::BeWrite, None, Some("T")).is_some()));
    }

    #[test]
    fn rules_need_exactly_one_scope() {
        let f = Faults::default();
        assert!(f.add(rule(r#"{"fault":"mem_limit"}"#)).is_err());
        assert!(f.add(rule(r#"{"fault":"mem_limit","next":1,"always":true}"#)).is_err());
        assert!(serde_json::from_str::<FaultRule>(r#"{"fault":"nope","next":1}"#).is_err());
    }
}
