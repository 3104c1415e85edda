//! The Stream Load client and its label-exact retry loop against the
//! emulator (in-process, port 0), through every fault that matters for
//! "nothing lost, nothing duplicated", plus a hand-written fake FE that
//! records whether a body reached it before its 307.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use rockfeed::sink::starrocks::client::{ClientConfig, Credentials, Endpoint, StreamLoadClient};
use rockfeed::sink::starrocks::service::{LoadError, RetryPolicy, StreamLoader};
use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::faults::FaultRule;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig};

const DDL: &str = include_str!("../deploy/emulator/docs_examples.sql");
const PW: &str = "pw";

async fn emulator(tweak: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let mut cfg = EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", PW);
    tweak(&mut cfg);
    Emulator::start(cfg).await.unwrap()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        base: Duration::from_millis(10),
        throttle_base: Duration::from_millis(20),
        max: Duration::from_millis(200),
        label_wait: Duration::from_secs(10),
    }
}

fn loader_for(endpoints: Vec<String>, password: &str) -> StreamLoader {
    let eps: Vec<Endpoint> = endpoints.iter().map(|e| e.parse().unwrap()).collect();
    let mut cfg = ClientConfig::new(eps, Credentials { user: "root".into(), password: password.into() });
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.continue_timeout = Duration::from_secs(2);
    cfg.request_timeout = Duration::from_secs(10);
    StreamLoader::new(StreamLoadClient::new(cfg).unwrap(), "mydatabase", policy())
}

fn csv_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("column_separator", HeaderValue::from_static(","));
    h.insert("columns", HeaderValue::from_static("id,name,score"));
    h
}

fn fault(emu: &Emulator, json: &str) {
    emu.faults().add(serde_json::from_str::<FaultRule>(json).unwrap()).unwrap();
}

fn rows(emu: &Emulator) -> usize {
    emu.with_core(|c| c.table("mydatabase", "table1").unwrap().row_count())
}

const BODY: &[u8] = b"1,Lily,23\n2,Rose,23\n3,Alice,24\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_through_the_fe_redirect_with_auth_and_expect() {
    let emu = emulator(|_| {}).await;
    let l = loader_for(vec![emu.fe_url()], PW);
    let r = l.load("table1", "rf-table1-0-1", &csv_headers(), Bytes::from_static(BODY)).await.unwrap();
    assert_eq!((r.reply.status.as_str(), r.reply.loaded_rows, r.attempts, r.already_loaded), ("Success", 3, 1, false));
    assert_eq!(rows(&emu), 3);
    // The same batch again is recognised, not loaded twice.
    let r = l.load("table1", "rf-table1-0-1", &csv_headers(), Bytes::from_static(BODY)).await.unwrap();
    assert!(r.already_loaded);
    assert_eq!(rows(&emu), 3);
    assert_eq!(l.label_state("rf-table1-0-1").await.unwrap().state, "VISIBLE");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_transport_errors_resolve_to_exactly_one_copy() {
    let emu = emulator(|_| {}).await;
    let l = loader_for(vec![emu.fe_url()], PW);
    fault(&emu, r#"{"fault":"commit_unknown_committed","next":1}"#);
    let r = l.load("table1", "cu-1", &csv_headers(), Bytes::from_static(BODY)).await.unwrap();
    assert!(r.already_loaded, "second attempt sees the first one landed");
    assert_eq!(r.attempts, 2);
    fault(&emu, r#"{"fault":"commit_unknown_aborted","next":1}"#);
    let r = l.load("table1", "cu-2", &csv_headers(), Bytes::from_static(b"4,Ann,1\n")).await.unwrap();
    assert!(!r.already_loaded);
    assert_eq!(r.attempts, 2);
    assert_eq!(rows(&emu), 4);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_busy_and_throttled_backends_are_retried_with_the_same_label() {
    let emu = emulator(|_| {}).await;
    let l = loader_for(vec![emu.fe_url()], PW);
    for (i, f) in [
        "reset_mid_body",
        "too_many_versions",
        "mem_limit",
        "http_concurrency_limit",
        "shutting_down",
        "no_backend_alive",
    ]
    .iter()
    .enumerate()
    {
        fault(&emu, &format!(r#"{{"fault":"{f}","next":1}}"#));
        let body = format!("{},n{i},{i}\n", 100 + i);
        let r = l.load("table1", &format!("retry-{i}"), &csv_headers(), Bytes::from(body)).await.unwrap();
        assert_eq!(r.attempts, 2, "{f}");
        assert_eq!(r.reply.status, "Success", "{f}");
    }
    assert_eq!(rows(&emu), 6);
    let fired = emu.faults().fired();
    assert_eq!(fired.len(), 6, "{fired:?}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_timeout_counts_as_loaded() {
    let emu = emulator(|_| {}).await;
    let l = loader_for(vec![emu.fe_url()], PW);
    fault(&emu, r#"{"fault":"publish_timeout","label":"pt-1","delay_ms":200}"#);
    let r = l.load("table1", "pt-1", &csv_headers(), Bytes::from_static(BODY)).await.unwrap();
    assert_eq!((r.reply.status.as_str(), r.attempts), ("Publish Timeout", 1));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_and_data_refusals_return_at_once_and_apart() {
    let emu = emulator(|_| {}).await;
    let bad = loader_for(vec![emu.fe_url()], "wrong");
    match bad.load("table1", "auth-1", &csv_headers(), Bytes::from_static(BODY)).await {
        Err(LoadError::Destination { reason, trouble, .. }) => {
            assert!(reason.contains("401"), "{reason}");
            assert_eq!(trouble, rockfeed::telemetry::health::Trouble::Auth);
        }
        other => panic!("expected the destination refusing the credentials, got {other:?}"),
    }
    assert!(bad.health().down().is_some_and(|d| d.contains("401")), "the loader's health says why");
    let l = loader_for(vec![emu.fe_url()], PW);
    match l.load("table1", "filtered-1", &csv_headers(), Bytes::from_static(b"x,y,z\n")).await {
        Err(LoadError::Rejected { reason, .. }) => assert!(reason.contains("too many filtered rows"), "{reason}"),
        other => panic!("expected too many filtered rows, got {other:?}"),
    }
    assert!(l.health().down().is_none(), "a refused row is no outage");
    assert_eq!(rows(&emu), 0);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_loops_exhaust_the_retries() {
    let emu = emulator(|_| {}).await;
    let l = loader_for(vec![emu.fe_url()], PW);
    fault(&emu, r#"{"fault":"redirect_loop","always":true}"#);
    match l.load("table1", "loop-1", &csv_headers(), Bytes::from_static(BODY)).await {
        Err(LoadError::Exhausted { attempts, last, .. }) => {
            assert_eq!(attempts, 6);
            assert!(last.contains("redirects"), "{last}");
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_from_an_unreachable_fe() {
    let emu = emulator(|_| {}).await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let l = loader_for(vec![format!("http://{dead}"), emu.fe_url()], PW);
    let r = l.load("table1", "fo-1", &csv_headers(), Bytes::from_static(BODY)).await.unwrap();
    assert_eq!(r.attempts, 1, "failover happens inside one attempt");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_fe_label_state_takes_two_hops() {
    let emu = emulator(|c| c.follower_fe = Some("127.0.0.1:0".parse().unwrap())).await;
    let follower = format!("http://{}", emu.follower_addr.unwrap());
    let l = loader_for(vec![follower], PW);
    l.load("table1", "fol-1", &csv_headers(), Bytes::from_static(BODY)).await.unwrap();
    assert_eq!(l.label_state("fol-1").await.unwrap().state, "VISIBLE");
    assert_eq!(l.label_state("never").await.unwrap().state, "UNKNOWN");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_label_is_polled_then_resent_when_it_aborts() {
    let emu = emulator(|_| {}).await;
    // Another writer holds the label in PREPARE through the transaction API.
    let id = emu.with_core(|c| {
        c.begin("mydatabase", "table1", "busy-1", 60_000, 0, rockfeed::starrocks_emulator::now_ms()).unwrap()
    });
    let l = Arc::new(loader_for(vec![emu.fe_url()], PW));
    let task = tokio::spawn({
        let l = l.clone();
        async move { l.load("table1", "busy-1", &csv_headers(), Bytes::from_static(BODY)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the loader waits on a RUNNING label instead of using a new one");
    emu.with_core(|c| c.abort(id, "test", rockfeed::starrocks_emulator::now_ms()).unwrap());
    let r = task.await.unwrap().unwrap();
    assert_eq!(r.reply.status, "Success");
    assert_eq!(rows(&emu), 3);
    emu.shutdown().await;
}

/// A fake FE that answers 307 to `be` as soon as it has the request head,
/// and counts body bytes that arrive anyway.
fn fake_fe(be: std::net::SocketAddr) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let leaked = Arc::new(AtomicUsize::new(0));
    let counter = leaked.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            assert!(text.contains("expect: 100-continue"), "{text}");
            assert!(text.contains("authorization: basic"), "{text}");
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let reply = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{be}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(reply.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut rest = [0u8; 4096];
            while let Ok(n) = s.read(&mut rest) {
                if n == 0 {
                    break;
                }
                counter.fetch_add(n, Ordering::SeqCst);
            }
        }
    });
    (format!("http://{addr}"), leaked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_is_never_sent_to_an_fe_that_redirects() {
    let emu = emulator(|_| {}).await;
    let (fe, leaked) = fake_fe(emu.be_addrs[0]);
    let l = loader_for(vec![fe], PW);
    let body: Vec<u8> = (0..20_000).flat_map(|i| format!("{i},n{i},{i}\n").into_bytes()).collect();
    let r = l.load("table1", "expect-1", &csv_headers(), Bytes::from(body)).await.unwrap();
    assert_eq!(r.reply.loaded_rows, 20_000);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(leaked.load(Ordering::SeqCst), 0, "body bytes reached the FE");
    emu.shutdown().await;
}
