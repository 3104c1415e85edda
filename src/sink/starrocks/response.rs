//! Stream Load and transaction replies, parsed the lenient way StarRocks'
//! own Flink SDK does: keys matched case-insensitively, unknown keys
//! ignored, and both `StreamLoadPlanTimeMs` and the older
//! `StreamLoadPutTimeMs` accepted (`starrocks-stream-load.md` §3).
//!
//! A reply is data; what it *means* (done, retry, give up) is decided in
//! `retry.rs`.

use serde_json::Value as J;

/// The fields of a Stream Load / transaction reply rockfeed uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReply {
    /// `Status` (BE: `Success`, `Publish Timeout`, `Label Already Exists`,
    /// `Fail`; txn API: `OK`, `LABEL_ALREADY_EXISTS`, `TXN_NOT_EXISTS`, …;
    /// FE: `OK`, `FAILED`).
    pub status: String,
    pub message: String,
    pub label: Option<String>,
    pub txn_id: Option<i64>,
    /// `RUNNING` or `FINISHED`, with `Label Already Exists`.
    pub existing_job_status: Option<String>,
    pub total_rows: u64,
    pub loaded_rows: u64,
    pub filtered_rows: u64,
    pub unselected_rows: u64,
    pub load_bytes: u64,
    pub load_time_ms: u64,
    pub begin_txn_ms: u64,
    pub plan_ms: u64,
    pub read_data_ms: u64,
    pub write_data_ms: u64,
    pub commit_publish_ms: u64,
    pub error_url: Option<String>,
}

fn get<'a>(o: &'a serde_json::Map<String, J>, key: &str) -> Option<&'a J> {
    o.get(key).or_else(|| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn num(o: &serde_json::Map<String, J>, keys: &[&str]) -> u64 {
    keys.iter()
        .find_map(|k| get(o, k))
        .and_then(|v| v.as_u64().or_else(|| v.as_i64().map(|i| i.max(0) as u64)).or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(0)
}

fn text(o: &serde_json::Map<String, J>, key: &str) -> Option<String> {
    get(o, key).and_then(|v| match v {
        J::String(s) => Some(s.clone()),
        J::Null => None,
        other => Some(other.to_string()),
    })
}

impl LoadReply {
    /// Parses a reply body; `None` when it is not a JSON object.
    pub fn parse(body: &[u8]) -> Option<LoadReply> {
        let v: J = serde_json::from_slice(body).ok()?;
        let o = v.as_object()?;
        Some(LoadReply {
            // FE REST errors use lower-case `status`/`msg` (RestBaseResult).
            status: text(o, "Status").unwrap_or_default(),
            message: text(o, "Message").or_else(|| text(o, "msg")).unwrap_or_default(),
            label: text(o, "Label"),
            txn_id: get(o, "TxnId").and_then(J::as_i64),
            existing_job_status: text(o, "ExistingJobStatus"),
            total_rows: num(o, &["NumberTotalRows"]),
            loaded_rows: num(o, &["NumberLoadedRows"]),
            filtered_rows: num(o, &["NumberFilteredRows"]),
            unselected_rows: num(o, &["NumberUnselectedRows"]),
            load_bytes: num(o, &["LoadBytes"]),
            load_time_ms: num(o, &["LoadTimeMs"]),
            begin_txn_ms: num(o, &["BeginTxnTimeMs"]),
            plan_ms: num(o, &["StreamLoadPlanTimeMs", "StreamLoadPutTimeMs"]),
            read_data_ms: num(o, &["ReadDataTimeMs", "ReceivedDataTimeMs"]),
            write_data_ms: num(o, &["WriteDataTimeMs"]),
            commit_publish_ms: num(o, &["CommitAndPublishTimeMs"]),
            error_url: text(o, "ErrorURL"),
        })
    }
}

/// `GET /api/{db}/get_load_state` reply: the transaction state of a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelState {
    /// `UNKNOWN`, `PREPARE`, `PREPARED`, `COMMITTED`, `VISIBLE`, `ABORTED`.
    pub state: String,
    pub reason: String,
}

impl LabelState {
    /// Parses the reply; an error reply (`status` FAILED) yields `Err(msg)`.
    pub fn parse(body: &[u8]) -> Result<LabelState, String> {
        let v: J = serde_json::from_slice(body).map_err(|e| format!("get_load_state reply is not JSON: {e}"))?;
        let o = v.as_object().ok_or("get_load_state reply is not an object")?;
        if let Some(state) = text(o, "state") {
            return Ok(LabelState { state: state.to_ascii_uppercase(), reason: text(o, "reason").unwrap_or_default() });
        }
        Err(text(o, "msg").or_else(|| text(o, "message")).unwrap_or_else(|| v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_be_reply_with_the_old_put_time_key_and_unknown_keys() {
        let body = br#"{"TxnId": 7, "label": "l", "Status": "Success", "Message": "OK", "NumberLoadedRows": 3,
            "NumberTotalRows": 4, "NumberFilteredRows": 1, "StreamLoadPutTimeMs": 5, "Shiny": true,
            "ErrorURL": "http://be/api/_load_error_log?file=x"}"#;
        let r = LoadReply::parse(body).unwrap();
        assert_eq!(r.status, "Success");
        assert_eq!(r.label.as_deref(), Some("l"));
        assert_eq!((r.txn_id, r.loaded_rows, r.total_rows, r.filtered_rows, r.plan_ms), (Some(7), 3, 4, 1, 5));
        assert!(r.error_url.is_some());
    }

    #[test]
    fn parses_fe_rest_errors_and_label_states() {
        let r = LoadReply::parse(br#"{"status":"FAILED","code":"1","msg":"Need auth information.","message":"x"}"#)
            .unwrap();
        assert_eq!((r.status.as_str(), r.message.as_str()), ("FAILED", "x"));
        let s = LabelState::parse(br#"{"state":"VISIBLE","reason":"","status":"OK"}"#).unwrap();
        assert_eq!(s.state, "VISIBLE");
        assert_eq!(
            LabelState::parse(br#"{"status":"FAILED","msg":"No label selected."}"#).unwrap_err(),
            "No label selected."
        );
        assert!(LoadReply::parse(b"<html>").is_none());
    }
}
