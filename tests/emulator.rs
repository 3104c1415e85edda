//! Black-box tests of the StarRocks emulator over real HTTP.
//!
//! The emulator runs in-process on port 0; requests are made with `curl`
//! exactly as the StarRocks documentation writes them (`--location-trusted`,
//! `-H "Expect:100-continue"`, `-T file -XPUT`), or over a raw TCP socket
//! where the byte order on the wire is the point (307 before the body,
//! `100 Continue` before the body). `.ci/run` installs curl.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::engine::VersionPolicy;
use rockfeed::starrocks_emulator::faults::FaultKind;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig};
use serde_json::Value as J;

const DDL: &str = include_str!("../deploy/emulator/docs_examples.sql");
const PW: &str = "s3cret";

struct TestEmu {
    rt: tokio::runtime::Runtime,
    emu: Option<Emulator>,
    fe: String,
    dir: tempfile::TempDir,
}

impl TestEmu {
    fn start() -> TestEmu {
        Self::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut EmulatorConfig)) -> TestEmu {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", PW);
        tweak(&mut cfg);
        Self::start_cfg(cfg, dir)
    }

    fn start_cfg(cfg: EmulatorConfig, dir: tempfile::TempDir) -> TestEmu {
        assert!(Command::new("curl").arg("--version").output().is_ok(), "curl is required (.ci/run installs it)");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let emu = rt.block_on(Emulator::start(cfg)).unwrap();
        let fe = emu.fe_url();
        TestEmu { rt, emu: Some(emu), fe, dir }
    }

    fn emu(&self) -> &Emulator {
        self.emu.as_ref().unwrap()
    }

    fn file(&self, name: &str, body: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn fault(&self, rule: &str) {
        let (code, out) =
            curl(&["-u", &format!("root:{PW}"), "-XPOST", "-d", rule, &format!("{}/_emulator/faults", self.fe)]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("\"OK\""), "fault rule refused: {out}");
    }

    fn rows(&self, db: &str, table: &str) -> Vec<J> {
        let (_, out) = curl(&["-u", &format!("root:{PW}"), &format!("{}/_emulator/{db}/{table}", self.fe)]);
        serde_json::from_str::<J>(&out).unwrap().as_array().unwrap().clone()
    }

    fn state(&self, db: &str, label: &str) -> String {
        let (_, out) =
            curl(&["-u", &format!("root:{PW}"), &format!("{}/api/{db}/get_load_state?label={label}", self.fe)]);
        let j: J = serde_json::from_str(&out).unwrap();
        j["state"].as_str().unwrap().to_string()
    }

    /// The docs' CSV stream load: `curl --location-trusted -u … -H label … -T file -XPUT FE/api/db/tbl/_stream_load`.
    fn stream_load(&self, db: &str, table: &str, label: &str, file: &Path, extra: &[&str]) -> (i32, J) {
        let mut args = vec!["--location-trusted", "-u"];
        let auth = format!("root:{PW}");
        args.push(&auth);
        let lh = format!("label:{label}");
        args.extend(["-H", &lh, "-H", "Expect:100-continue"]);
        args.extend_from_slice(extra);
        let f = file.to_str().unwrap().to_string();
        let url = format!("{}/api/{db}/{table}/_stream_load", self.fe);
        args.extend(["-T", &f, "-XPUT", &url]);
        let (code, out) = curl(&args);
        (code, serde_json::from_str(&out).unwrap_or(J::Null))
    }

    /// A transaction-interface call with the docs' headers.
    fn txn(&self, op: &str, db: &str, table: Option<&str>, label: &str, extra: &[&str]) -> J {
        let auth = format!("root:{PW}");
        let lh = format!("label:{label}");
        let dh = format!("db:{db}");
        let url = format!("{}/api/transaction/{op}", self.fe);
        let mut args = vec!["--location-trusted", "-u", &auth, "-H", &lh, "-H", "Expect:100-continue", "-H", &dh];
        let th;
        if let Some(t) = table {
            th = format!("table:{t}");
            args.extend(["-H", &th]);
        }
        args.extend_from_slice(extra);
        let method = if op == "load" { "-XPUT" } else { "-XPOST" };
        args.extend([method, &url]);
        let (code, out) = curl(&args);
        assert_eq!(code, 0, "curl failed: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

impl Drop for TestEmu {
    fn drop(&mut self) {
        if let Some(e) = self.emu.take() {
            self.rt.block_on(e.shutdown());
        }
    }
}

/// Runs curl; returns (exit code, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("run curl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

const CSV: &[u8] = b"1,Lily,23\n2,Rose,23\n3,Alice,24\n4,Julia,25\n";

#[test]
fn docs_csv_example_loads_and_reports_success_in_starrocks_key_order() {
    let t = TestEmu::start();
    let f = t.file("example1.csv", CSV);
    let (code, j) = t.stream_load(
        "mydatabase",
        "table1",
        "123",
        &f,
        &["-H", "column_separator:,", "-H", "columns: id, name, score"],
    );
    assert_eq!(code, 0);
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "TxnId",
            "Label",
            "Status",
            "Message",
            "NumberTotalRows",
            "NumberLoadedRows",
            "NumberFilteredRows",
            "NumberUnselectedRows",
            "LoadBytes",
            "LoadTimeMs",
            "BeginTxnTimeMs",
            "StreamLoadPlanTimeMs",
            "ReadDataTimeMs",
            "WriteDataTimeMs",
            "CommitAndPublishTimeMs"
        ]
    );
    assert_eq!(j["Status"], "Success");
    assert_eq!(j["Message"], "OK");
    assert_eq!(j["NumberLoadedRows"], 4);
    assert_eq!(j["LoadBytes"], CSV.len());
    let rows = t.rows("mydatabase", "table1");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2], serde_json::json!({"id": 3, "name": "Alice", "score": 24}));
    assert_eq!(t.state("mydatabase", "123"), "VISIBLE");

    // Same label again: the earlier load finished, nothing is loaded twice.
    let (_, j) = t.stream_load("mydatabase", "table1", "123", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Label Already Exists");
    assert_eq!(j["ExistingJobStatus"], "FINISHED");
    assert_eq!(j["TxnId"], -1);
    assert_eq!(j["Message"], "Label [123] has already been used.");
    assert_eq!(t.rows("mydatabase", "table1").len(), 4);
}

#[test]
fn plain_curl_follow_without_location_trusted_loses_auth_like_real_starrocks() {
    // Advertise the BE under another host name so curl treats the hop as
    // cross-host, as it is against a real cluster.
    let t = TestEmu::start_with(|c| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        c.bes = vec![format!("127.0.0.1:{port}").parse().unwrap()];
        c.be_advertise = vec![format!("localhost:{port}")];
    });
    let f = t.file("example1.csv", CSV);
    let url = format!("{}/api/mydatabase/table1/_stream_load", t.fe);
    let (code, out) = curl(&[
        "-L",
        "-u",
        &format!("root:{PW}"),
        "-H",
        "label:plain-l",
        "-H",
        "Expect:100-continue",
        "-H",
        "column_separator:,",
        "-T",
        f.to_str().unwrap(),
        "-XPUT",
        &url,
    ]);
    assert_eq!(code, 0);
    let j: J = serde_json::from_str(&out).unwrap();
    assert_eq!(j["Status"], "Fail");
    assert_eq!(j["Message"], "no valid Basic authorization");
    assert!(t.rows("mydatabase", "table1").is_empty());
    let (_, j) = t.stream_load("mydatabase", "table1", "trusted-l", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Success", "{j}");
}

#[test]
fn docs_json_example_with_jsonpaths_and_expression_columns() {
    let t = TestEmu::start();
    let f = t.file("example2.json", br#"{"name": "Beijing", "code": 2}"#);
    let (_, j) = t.stream_load(
        "mydatabase",
        "table2",
        "label2",
        &f,
        &[
            "-H",
            "format: json",
            "-H",
            "jsonpaths: [\"$.name\",\"$.code\"]",
            "-H",
            "columns: city,tmp_id, id = tmp_id * 100",
        ],
    );
    assert_eq!(j["Status"], "Success", "{j}");
    assert_eq!(t.rows("mydatabase", "table2"), vec![serde_json::json!({"id": "200", "city": "Beijing"})]);

    let f = t.file("example3.json", br#"{"RECORDS":[{"name":"Shanghai","code":3},{"name":"Shenzhen","code":4}]}"#);
    let (_, j) = t.stream_load(
        "mydatabase",
        "table2",
        "label3",
        &f,
        &[
            "-H",
            "format: json",
            "-H",
            "jsonpaths: [\"$.name\",\"$.code\"]",
            "-H",
            "columns: city,tmp_id, id = tmp_id * 100",
            "-H",
            "json_root: $.RECORDS",
            "-H",
            "strip_outer_array: true",
        ],
    );
    assert_eq!(j["NumberLoadedRows"], 2, "{j}");
    assert_eq!(t.rows("mydatabase", "table2").len(), 3);
}

#[test]
fn docs_transaction_interface_begin_load_prepare_commit() {
    let t = TestEmu::start();
    let f = t.file("example1.csv", CSV);
    let l = "streamload_txn_example1_table1";
    let j = t.txn("begin", "test_db", Some("table1"), l, &[]);
    assert_eq!(j["Status"], "OK");
    assert_eq!(j["Message"], "");
    assert_eq!(j["Label"], l);
    let id = j["TxnId"].as_i64().unwrap();
    assert!(j.get("BeginTxnTimeMs").is_some());

    let dup = t.txn("begin", "test_db", Some("table1"), l, &[]);
    assert_eq!(dup["Status"], "LABEL_ALREADY_EXISTS");
    assert_eq!(dup["ExistingJobStatus"], "RUNNING");
    assert_eq!(dup["Message"], format!("Label [{l}] has already been used."));

    let fp = f.to_str().unwrap();
    let j = t.txn("load", "test_db", Some("table1"), l, &["-T", fp, "-H", "column_separator: ,"]);
    assert_eq!(j["Status"], "OK", "{j}");
    assert_eq!(j["LoadBytes"], CSV.len());
    // A second load call appends to the same transaction.
    let f2 = t.file("more.csv", b"5,Ann,30\n");
    let j = t.txn("load", "test_db", Some("table1"), l, &["-T", f2.to_str().unwrap(), "-H", "column_separator: ,"]);
    assert_eq!(j["Status"], "OK");

    let j = t.txn("prepare", "test_db", None, l, &["-H", "prepared_timeout:300"]);
    assert_eq!(j["Status"], "OK", "{j}");
    assert_eq!(j["TxnId"], id);
    assert_eq!(j["NumberLoadedRows"], 5);
    assert_eq!(t.state("test_db", l), "PREPARED");
    assert!(t.rows("test_db", "table1").is_empty(), "PREPARED data is invisible");

    let j = t.txn("commit", "test_db", None, l, &[]);
    assert_eq!(j["Status"], "OK", "{j}");
    assert_eq!(t.state("test_db", l), "VISIBLE");
    assert_eq!(t.rows("test_db", "table1").len(), 5);

    let again = t.txn("commit", "test_db", None, l, &[]);
    assert_eq!(again["Status"], "OK");
    assert_eq!(again["Message"], format!("Transaction {id} has already committed, label is {l}"));
    let rb = t.txn("rollback", "test_db", None, l, &[]);
    assert_eq!(rb["Status"], "FAILED");
    assert!(rb["Message"].as_str().unwrap().contains("Can not abort VISIBLE transaction"));
}

#[test]
fn transaction_rollback_and_reuse_of_aborted_label() {
    let t = TestEmu::start();
    let f = t.file("example1.csv", CSV);
    let l = "rb1";
    t.txn("begin", "test_db", Some("table1"), l, &[]);
    t.txn("load", "test_db", Some("table1"), l, &["-T", f.to_str().unwrap(), "-H", "column_separator: ,"]);
    let j = t.txn("rollback", "test_db", None, l, &[]);
    assert_eq!(j["Status"], "OK", "{j}");
    assert_eq!(t.state("test_db", l), "ABORTED");
    let again = t.txn("rollback", "test_db", None, l, &[]);
    assert!(again["Message"].as_str().unwrap().contains("has already aborted"), "{again}");
    let c = t.txn("commit", "test_db", None, l, &[]);
    assert_eq!(c["Status"], "FAILED");
    assert!(c["Message"].as_str().unwrap().contains("Can not commit ABORTED transaction"));
    // ABORTED labels may be reused.
    let j = t.txn("begin", "test_db", Some("table1"), l, &[]);
    assert_eq!(j["Status"], "OK", "{j}");
    let j = t.txn("prepare", "test_db", None, l, &[]);
    assert_eq!(j["Status"], "INTERNAL_ERROR");
    assert!(j["Message"].as_str().unwrap().contains("hasn't send any data yet"));
}

#[test]
fn transaction_api_error_vocabulary() {
    let t = TestEmu::start();
    let j = t.txn("frobnicate", "test_db", None, "x", &[]);
    assert_eq!(j["Status"], "FAILED");
    assert!(j["Message"].as_str().unwrap().ends_with("Unknown transaction operation: frobnicate"));
    let j = t.txn("load", "test_db", Some("table1"), "never-begun", &["-d", "1,a,2"]);
    assert_eq!(j["Status"], "TXN_NOT_EXISTS");
    let (_, out) = curl(&[
        "--location-trusted",
        "-u",
        &format!("root:{PW}"),
        "-H",
        "db:test_db",
        "-XPOST",
        &format!("{}/api/transaction/begin", t.fe),
    ]);
    assert!(out.contains("Empty label."), "{out}");
    let (_, out) = curl(&["-u", &format!("root:{PW}"), &format!("{}/api/test_db/get_load_state", t.fe)]);
    assert!(out.contains("No label selected."), "{out}");
    let (_, out) = curl(&["-u", &format!("root:{PW}"), &format!("{}/api/nodb/get_load_state?label=x", t.fe)]);
    assert!(out.contains("unknown database, database=nodb"), "{out}");
    assert_eq!(t.state("test_db", "never-used"), "UNKNOWN");
}

#[test]
fn follower_fe_sends_transaction_calls_through_the_leader() {
    let t = TestEmu::start_with(|c| c.follower_fe = Some("127.0.0.1:0".parse().unwrap()));
    let follower = format!("http://{}", t.emu().follower_addr.unwrap());
    let (_, head) = curl(&[
        "-i",
        "-u",
        &format!("root:{PW}"),
        "-H",
        "label:f1",
        "-H",
        "db:test_db",
        "-H",
        "table:table1",
        "-XPOST",
        &format!("{follower}/api/transaction/begin"),
    ]);
    assert!(head.starts_with("HTTP/1.1 307"), "{head}");
    assert!(head.contains(&format!("location: {}/api/transaction/begin", t.fe)), "{head}");
    // Two hops with --location-trusted: follower → leader → BE.
    let (code, out) = curl(&[
        "--location-trusted",
        "-u",
        &format!("root:{PW}"),
        "-H",
        "label:f1",
        "-H",
        "db:test_db",
        "-H",
        "table:table1",
        "-XPOST",
        &format!("{follower}/api/transaction/begin"),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\"Status\": \"OK\""), "{out}");
}

#[test]
fn fe_requires_expect_on_http11_but_not_on_http10() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    let url = format!("{}/api/mydatabase/table1/_stream_load", t.fe);
    let auth = format!("root:{PW}");
    let (_, out) = curl(&[
        "-i",
        "--location-trusted",
        "-u",
        &auth,
        "-H",
        "Expect:",
        "-H",
        "column_separator:,",
        "-T",
        f.to_str().unwrap(),
        "-XPUT",
        &url,
    ]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"));
    assert!(out.contains("\"Status\": \"FAILED\""));
    assert!(out.contains("class com.starrocks.common.DdlException: There is no 100-continue header"));
    // curl -0 speaks HTTP/1.0, which skips the check (StarRocks #52998).
    let (code, out) = curl(&[
        "-0",
        "--location-trusted",
        "-u",
        &auth,
        "-H",
        "label:http10",
        "-H",
        "column_separator:,",
        "-T",
        f.to_str().unwrap(),
        "-XPUT",
        &url,
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\"Status\": \"Success\""), "{out}");
}

#[test]
fn bad_password_is_401_with_basic_challenge() {
    let t = TestEmu::start();
    let (_, out) = curl(&[
        "-i",
        "-u",
        "root:wrong",
        "-H",
        "Expect:100-continue",
        "-d",
        "x",
        "-XPUT",
        &format!("{}/api/mydatabase/table1/_stream_load", t.fe),
    ]);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.contains("www-authenticate: Basic realm=\"\""), "{out}");
    assert!(out.contains("\"status\": \"FAILED\"") && out.contains("\"code\": \"1\""), "{out}");
}

/// Reads an HTTP response head from a raw socket.
fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        buf.push(b[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn fe_redirects_before_reading_the_body_and_be_sends_100_continue() {
    use base64::Engine;
    let t = TestEmu::start();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("root:{PW}"));
    let head = format!(
        "PUT /api/mydatabase/table1/_stream_load?x=1 HTTP/1.1\r\nHost: fe\r\nAuthorization: Basic {auth}\r\nExpect: 100-continue\r\nlabel: raw1\r\ncolumn_separator: ,\r\nContent-Length: {}\r\n\r\n",
        CSV.len()
    );
    let mut s = TcpStream::connect(t.emu().fe_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // No body sent: the FE must answer anyway.
    let resp = read_head(&mut s);
    assert!(resp.starts_with("HTTP/1.1 307 Temporary Redirect"), "{resp}");
    let be = t.emu().be_addrs[0];
    assert!(resp.contains(&format!("location: http://{be}/api/mydatabase/table1/_stream_load?x=1")), "{resp}");
    assert!(resp.contains("connection: close"), "{resp}");

    let mut s = TcpStream::connect(be).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let cont = read_head(&mut s);
    assert!(cont.starts_with("HTTP/1.1 100 Continue"), "{cont}");
    s.write_all(CSV).unwrap();
    let resp = read_head(&mut s);
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    assert!(resp.contains("content-type: application/json"));
}

#[test]
fn chunked_bodies_are_accepted() {
    let t = TestEmu::start();
    let f = t.file("c.csv", CSV);
    let (_, j) = t.stream_load(
        "mydatabase",
        "table1",
        "chunked1",
        &f,
        &["-H", "Transfer-Encoding: chunked", "-H", "column_separator:,"],
    );
    assert_eq!(j["Status"], "Success", "{j}");
    assert_eq!(j["NumberLoadedRows"], 4);
}

#[test]
fn filtered_rows_fail_the_load_and_the_error_url_is_fetchable() {
    let t = TestEmu::start();
    let f = t.file("bad.csv", b"1,a,10\nx,b,11\n3,c\n");
    let (_, j) = t.stream_load("mydatabase", "table1", "bad1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Fail");
    assert_eq!(j["Message"], "too many filtered rows");
    assert_eq!((j["NumberTotalRows"].as_u64(), j["NumberFilteredRows"].as_u64()), (Some(3), Some(2)));
    assert!(t.rows("mydatabase", "table1").is_empty());
    assert_eq!(t.state("mydatabase", "bad1"), "ABORTED");
    let url = j["ErrorURL"].as_str().unwrap();
    let (code, log) = curl(&[url]);
    assert_eq!(code, 0);
    assert!(log.contains("Value count does not match column count. Expect 3, but got 2. Row: 3,c"), "{log}");
    assert!(log.contains("Row: x,b,11"), "{log}");
    // With a tolerant ratio the same label (aborted) loads the good row.
    let (_, j) =
        t.stream_load("mydatabase", "table1", "bad1", &f, &["-H", "column_separator:,", "-H", "max_filter_ratio:0.9"]);
    assert_eq!(j["Status"], "Success", "{j}");
    assert_eq!(j["NumberLoadedRows"], 1);
    assert!(j["ErrorURL"].is_string());
}

#[test]
fn where_clause_counts_unselected_rows() {
    let t = TestEmu::start();
    let f = t.file("w.csv", CSV);
    let (_, j) =
        t.stream_load("mydatabase", "table1", "w1", &f, &["-H", "column_separator:,", "-H", "where: score > 23"]);
    assert_eq!(j["Status"], "Success");
    assert_eq!(
        (j["NumberTotalRows"].as_u64(), j["NumberUnselectedRows"].as_u64(), j["NumberLoadedRows"].as_u64()),
        (Some(4), Some(2), Some(2))
    );
}

#[test]
fn compressed_csv_loads_with_compression_header_and_format() {
    use std::io::Write as _;
    let t = TestEmu::start();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(CSV).unwrap();
    let f = t.file("c.csv.gz", &gz.finish().unwrap());
    let (_, j) =
        t.stream_load("mydatabase", "table1", "gz1", &f, &["-H", "column_separator:,", "-H", "compression: gzip"]);
    assert_eq!(j["Status"], "Success", "{j}");
    let z = t.file("c.csv.zst", &zstd::encode_all(CSV, 3).unwrap());
    let (_, j) = t.stream_load("mydatabase", "table1", "zst1", &z, &["-H", "column_separator:,", "-H", "format: zstd"]);
    assert_eq!(j["Status"], "Success", "{j}");
    let (_, j) = t.stream_load(
        "mydatabase",
        "table1",
        "both1",
        &z,
        &["-H", "compression: zstd", "-H", "Content-Encoding: zstd"],
    );
    assert_eq!(j["Message"], "Only one of http header content-encoding and compression can be set");
}

#[test]
fn aggregate_table_merges_loads_and_buckets_by_crc32() {
    let t = TestEmu::start();
    let sep = "column_separator:\\x01";
    let cols = "columns: vehicle_id,window_start,metric,fleet,model,region,cnt,total,min,max";
    let a = t.file("a.csv", b"VIN0001\x012024-05-06 07:08:00\x01speed\x01f1\x01\\N\x01eu\x012\x0130.5\x0110\x0120.5\n");
    let b = t.file("b.csv", b"VIN0001\x012024-05-06 07:08:00\x01speed\x01f1\x01\\N\x01eu\x011\x019.5\x019.5\x019.5\n");
    for (label, f) in [("agg-a", &a), ("agg-b", &b)] {
        let (_, j) = t.stream_load("rockfeed", "telemetry_1m", label, f, &["-H", sep, "-H", cols]);
        assert_eq!(j["Status"], "Success", "{j}");
    }
    let rows = t.rows("rockfeed", "telemetry_1m");
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r["cnt"].as_i64(), r["total"].as_f64(), r["min"].as_f64(), r["max"].as_f64()),
        (Some(3), Some(40.0), Some(9.5), Some(20.5))
    );
    assert_eq!(r["model"], J::Null);
    // One tablet (partition p20240506, bucket crc32("VIN0001") % 16), two loads on it.
    let (_, stats) = curl(&["-u", &format!("root:{PW}"), &format!("{}/_emulator/stats", t.fe)]);
    let stats: J = serde_json::from_str(&stats).unwrap();
    let tablets = stats["tables"]["rockfeed.telemetry_1m"]["tablets"].as_array().unwrap();
    assert_eq!(tablets.len(), 1);
    assert_eq!(tablets[0]["partition"], "p20240506");
    assert_eq!(tablets[0]["bucket"], rockfeed::starrocks::bucket::bucket_of_str(b"VIN0001", 16));
    assert_eq!(tablets[0]["versions_total"], 3, "the initial version plus one per load");
}

#[test]
fn primary_key_partial_update_and_delete_through_op() {
    let t = TestEmu::start();
    let f = t.file("p.csv", CSV);
    t.stream_load("mydatabase", "table1", "pk1", &f, &["-H", "column_separator:,"]);
    let upd = t.file("u.csv", b"1,99\n");
    let (_, j) = t.stream_load(
        "mydatabase",
        "table1",
        "pk2",
        &upd,
        &["-H", "column_separator:,", "-H", "partial_update:true", "-H", "columns:id,score"],
    );
    assert_eq!(j["Status"], "Success", "{j}");
    let del = t.file("d.csv", b"2,Rose,23\n3,Alice,24\n");
    let (_, j) = t.stream_load(
        "mydatabase",
        "table1",
        "pk3",
        &del,
        &["-H", "column_separator:,", "-H", "columns:id,name,score,__op='delete'"],
    );
    assert_eq!(j["Status"], "Success", "{j}");
    let rows = t.rows("mydatabase", "table1");
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"id":1,"name":"Lily","score":99}),
            serde_json::json!({"id":4,"name":"Julia","score":25})
        ]
    );
}

/// The docs' "Conditional updates" example, run as written: table5 holds
/// (101, 2, 80) and (102, 2, 90); loading `101,1,100` and `102,3,100` with
/// `merge_condition: version` keeps 101 (1 < 2) and updates 102 (3 >= 2).
/// Then the FE's refusals, worded as `Load.checkMergeCondition` words them.
#[test]
fn conditional_update_keeps_the_larger_version_as_the_docs_show() {
    let t = TestEmu::start();
    let seed = t.file("seed.csv", b"101,2,80\n102,2,90\n");
    let (_, j) = t.stream_load("test_db", "table5", "label9", &seed, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Success", "{j}");
    let f = t.file("example5.csv", b"101,1,100\n102,3,100\n");
    let (_, j) = t.stream_load(
        "test_db",
        "table5",
        "label10",
        &f,
        &["-H", "Expect:100-continue", "-H", "column_separator:,", "-H", "merge_condition:version"],
    );
    assert_eq!(j["Status"], "Success", "{j}");
    assert_eq!(
        t.rows("test_db", "table5"),
        vec![
            serde_json::json!({"id":101,"version":2,"score":80}),
            serde_json::json!({"id":102,"version":3,"score":100})
        ]
    );
    // An equal version applies (the update takes effect when >=).
    let eq = t.file("eq.csv", b"101,2,81\n");
    let (_, j) = t.stream_load(
        "test_db",
        "table5",
        "label11",
        &eq,
        &["-H", "column_separator:,", "-H", "merge_condition:version"],
    );
    assert_eq!(j["Status"], "Success", "{j}");
    assert_eq!(t.rows("test_db", "table5")[0], serde_json::json!({"id":101,"version":2,"score":81}));
    for (label, db, table, mc, want) in [
        ("mc1", "test_db", "table5", "id", "Merge condition column id should not be primary key!"),
        ("mc2", "test_db", "table5", "nope", "Merge condition column nope does not exist."),
        (
            "mc3",
            "test_db",
            "table1",
            "name",
            "Merge condition column has invalid type maybe bitmap/hll/percentile/json/varchar!",
        ),
        ("mc4", "rockfeed", "telemetry_1m", "cnt", "Conditional update only support primary key table telemetry_1m"),
    ] {
        let (_, j) =
            t.stream_load(db, table, label, &eq, &["-H", "column_separator:,", "-H", &format!("merge_condition:{mc}")]);
        assert_eq!(j["Status"], "Fail", "{j}");
        assert!(j["Message"].as_str().unwrap().contains(want), "{label}: {j}");
    }
}

// ---- faults -----------------------------------------------------------------

#[test]
fn injected_too_many_versions_and_mem_limit_fail_then_same_label_retries() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    for (fault, needle) in [
        ("too_many_versions", "too many versions, current/limit: 1001/1000"),
        ("mem_limit", "Memory of process exceed limit"),
    ] {
        t.fault(&format!(r#"{{"fault":"{fault}","next":1}}"#));
        let label = format!("retry-{fault}");
        let (_, j) = t.stream_load("mydatabase", "table1", &label, &f, &["-H", "column_separator:,"]);
        assert_eq!(j["Status"], "Fail");
        assert!(j["Message"].as_str().unwrap().contains(needle), "{j}");
        assert_eq!(t.state("mydatabase", &label), "ABORTED");
        let (_, j) = t.stream_load("mydatabase", "table1", &label, &f, &["-H", "column_separator:,"]);
        assert_eq!(j["Status"], "Success", "{j}");
    }
    assert_eq!(t.rows("mydatabase", "table1").len(), 4);
}

#[test]
fn genuine_too_many_versions_when_loads_outpace_compaction() {
    let t = TestEmu::start_with(|c| c.versions = VersionPolicy { max_versions: 3, compaction_per_sec: 0.0 });
    let f = t.file("one.csv", b"1,a,1\n");
    let statuses: Vec<String> = (0..3)
        .map(|i| t.stream_load("mydatabase", "table1", &format!("v{i}"), &f, &["-H", "column_separator:,"]).1)
        .map(|j| format!("{} {}", j["Status"].as_str().unwrap(), j["Message"].as_str().unwrap()))
        .collect();
    assert!(statuses[0].starts_with("Success"));
    assert!(statuses[1].starts_with("Success"));
    assert!(statuses[2].starts_with("Fail Failed to load data into tablet"), "{statuses:?}");
    assert!(statuses[2].contains("because of too many versions, current/limit: 4/3"), "{statuses:?}");
}

#[test]
fn busy_and_shutting_down_backends_fail_the_load() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    t.fault(r#"{"fault":"http_concurrency_limit","next":1}"#);
    t.fault(r#"{"fault":"shutting_down","next":1}"#);
    let (_, j) = t.stream_load("mydatabase", "table1", "busy1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Message"], "Stream Load exceed http cuncurrent limit 100, please try again later");
    let (_, j) = t.stream_load("mydatabase", "table1", "busy1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Message"], "Service is shutting down, please retry later!");
    assert_eq!(j["Status"], "Fail");
    assert_eq!(t.state("mydatabase", "busy1"), "UNKNOWN", "refused before begin");
}

#[test]
fn commit_transport_error_both_branches_resolve_through_the_same_label() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    // Branch 1: the commit really happened.
    t.fault(r#"{"fault":"commit_unknown_committed","next":1}"#);
    let (_, j) = t.stream_load("mydatabase", "table1", "cu1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Fail");
    assert!(j["Message"].as_str().unwrap().contains("Transaction status unknown, you can retry with same label."));
    let (_, j) = t.stream_load("mydatabase", "table1", "cu1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Label Already Exists");
    assert_eq!(j["ExistingJobStatus"], "FINISHED");
    assert_eq!(t.rows("mydatabase", "table1").len(), 4);
    // Branch 2: it was aborted; the retry loads it.
    let f2 = t.file("f.csv", b"9,Zed,1\n");
    t.fault(r#"{"fault":"commit_unknown_aborted","next":1}"#);
    let (_, j) = t.stream_load("mydatabase", "table1", "cu2", &f2, &["-H", "column_separator:,"]);
    assert!(j["Message"].as_str().unwrap().contains("Transaction status unknown"));
    assert_eq!(t.rows("mydatabase", "table1").len(), 4);
    let (_, j) = t.stream_load("mydatabase", "table1", "cu2", &f2, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Success");
    assert_eq!(t.rows("mydatabase", "table1").len(), 5);
}

#[test]
fn publish_timeout_is_committed_and_becomes_visible_later() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    t.fault(r#"{"fault":"publish_timeout","label":"pt1","delay_ms":400}"#);
    let (_, j) = t.stream_load("mydatabase", "table1", "pt1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Publish Timeout", "{j}");
    assert_eq!(t.state("mydatabase", "pt1"), "COMMITTED");
    assert!(t.rows("mydatabase", "table1").is_empty(), "committed, not yet visible");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.state("mydatabase", "pt1") != "VISIBLE" {
        assert!(std::time::Instant::now() < deadline, "never became visible");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(t.rows("mydatabase", "table1").len(), 4);
}

#[test]
fn fe_faults_no_backend_redirect_loop_unreachable_and_401() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    t.fault(r#"{"fault":"no_backend_alive","next":1}"#);
    let (_, j) = t.stream_load("mydatabase", "table1", "nb1", &f, &[]);
    assert_eq!(j["Status"], "FAILED");
    assert_eq!(j["Message"], "class com.starrocks.common.DdlException: No backend alive.");
    t.fault(r#"{"fault":"redirect_loop","always":true}"#);
    let (code, _) = t.stream_load("mydatabase", "table1", "loop1", &f, &["--max-redirs", "3"]);
    assert_eq!(code, 47, "curl: maximum redirects followed");
    let (_, rules) = curl(&["-u", &format!("root:{PW}"), "-XDELETE", &format!("{}/_emulator/faults", t.fe)]);
    assert!(rules.contains("OK"));
    t.fault(r#"{"fault":"redirect_unreachable","next":1}"#);
    let (code, _) = t.stream_load("mydatabase", "table1", "un1", &f, &[]);
    assert_eq!(code, 7, "curl: could not connect");
    t.fault(r#"{"fault":"unauthorized","next":1}"#);
    let (_, out) = curl(&["-i", "-u", &format!("root:{PW}"), &format!("{}/_emulator/stats", t.fe)]);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(t.rows("mydatabase", "table1").is_empty());
}

#[test]
fn connection_reset_mid_body_aborts_and_the_label_can_be_retried() {
    let t = TestEmu::start();
    let body: Vec<u8> = (0..5000).flat_map(|i| format!("{i},n{i},{i}\n").into_bytes()).collect();
    let f = t.file("big.csv", &body);
    t.fault(r#"{"fault":"reset_mid_body","next":1}"#);
    let (code, _) = t.stream_load("mydatabase", "table1", "rst1", &f, &["-H", "column_separator:,"]);
    assert!(code == 52 || code == 55 || code == 56, "curl should see the connection drop, got exit {code}");
    assert_eq!(t.state("mydatabase", "rst1"), "ABORTED");
    let (_, j) = t.stream_load("mydatabase", "table1", "rst1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Success");
    assert_eq!(t.rows("mydatabase", "table1").len(), 5000);
}

#[test]
fn slow_100_continue_still_loads() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    t.fault(r#"{"fault":"slow100_continue","next":1,"delay_ms":300}"#);
    let (_, j) = t.stream_load("mydatabase", "table1", "slow1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Success");
    assert!(t.emu().faults().fired().iter().any(|(k, _)| *k == FaultKind::Slow100Continue));
}

#[test]
fn txn_context_lost_in_processing_and_crash_after_prepare() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    let fp = f.to_str().unwrap();
    t.txn("begin", "test_db", Some("table1"), "ctx1", &[]);
    t.fault(r#"{"fault":"txn_in_processing","label":"ctx1"}"#);
    let j = t.txn("load", "test_db", Some("table1"), "ctx1", &["-T", fp, "-H", "column_separator: ,"]);
    assert_eq!(j["Status"], "TXN_IN_PROCESSING", "{j}");
    let (_, _) = curl(&["-u", &format!("root:{PW}"), "-XDELETE", &format!("{}/_emulator/faults", t.fe)]);
    t.txn("load", "test_db", Some("table1"), "ctx1", &["-T", fp, "-H", "column_separator: ,"]);
    t.fault(r#"{"fault":"context_lost","label":"ctx1"}"#);
    let j = t.txn("prepare", "test_db", None, "ctx1", &[]);
    assert_eq!(j["Status"], "TXN_NOT_EXISTS", "{j}");
    assert_eq!(t.state("test_db", "ctx1"), "PREPARE", "the FE still has it until it times out");

    t.txn("begin", "test_db", Some("table1"), "crash1", &[]);
    t.txn("load", "test_db", Some("table1"), "crash1", &["-T", fp, "-H", "column_separator: ,"]);
    t.fault(r#"{"fault":"crash_after_prepare","next":1}"#);
    let (code, _) = curl(&[
        "--location-trusted",
        "-u",
        &format!("root:{PW}"),
        "-H",
        "label:crash1",
        "-H",
        "db:test_db",
        "-XPOST",
        &format!("{}/api/transaction/prepare", t.fe),
    ]);
    assert_eq!(code, 52, "empty reply: the 'crash' dropped the connection");
    assert_eq!(t.state("test_db", "crash1"), "PREPARED", "prepare was durable before the crash");
    let j = t.txn("commit", "test_db", None, "crash1", &[]);
    assert_eq!(j["Status"], "OK", "{j}");
    assert_eq!(t.rows("test_db", "table1").len(), 4);
}

#[test]
fn a_prepared_transaction_aborted_before_its_commit_refuses_the_commit_and_takes_the_label_again() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    let fp = f.to_str().unwrap();
    t.txn("begin", "test_db", Some("table1"), "late1", &[]);
    t.txn("load", "test_db", Some("table1"), "late1", &["-T", fp, "-H", "column_separator: ,"]);
    t.txn("prepare", "test_db", None, "late1", &[]);
    t.fault(r#"{"fault":"aborted_before_commit","next":1}"#);
    let j = t.txn("commit", "test_db", None, "late1", &[]);
    assert_eq!(j["Status"], "FAILED", "{j}");
    let msg = j["Message"].as_str().unwrap();
    assert!(msg.contains("Can not commit ABORTED transaction"), "{j}");
    assert!(msg.contains("aborted by user"), "{j}");
    assert_eq!(t.state("test_db", "late1"), "ABORTED");
    assert!(t.rows("test_db", "table1").is_empty(), "nothing of the aborted transaction is visible");
    // The rule fired once: the label loads again and commits.
    t.txn("begin", "test_db", Some("table1"), "late1", &[]);
    t.txn("load", "test_db", Some("table1"), "late1", &["-T", fp, "-H", "column_separator: ,"]);
    t.txn("prepare", "test_db", None, "late1", &[]);
    let j = t.txn("commit", "test_db", None, "late1", &[]);
    assert_eq!(j["Status"], "OK", "{j}");
    assert_eq!(t.rows("test_db", "table1").len(), 4);
}

#[test]
fn running_transaction_cap_refuses_new_transactions() {
    let t = TestEmu::start_with(|c| c.registry.max_running_txn_num_per_db = 1);
    t.txn("begin", "test_db", Some("table1"), "cap1", &[]);
    let j = t.txn("begin", "test_db", Some("table1"), "cap2", &[]);
    assert_eq!(j["Status"], "INTERNAL_ERROR");
    assert!(j["Message"].as_str().unwrap().contains("larger than limit 1"), "{j}");
}

#[test]
fn labels_expire_after_label_keep_max_second() {
    let t = TestEmu::start_with(|c| c.registry.label_keep_max_ms = 300);
    let f = t.file("e.csv", CSV);
    t.stream_load("mydatabase", "table1", "exp1", &f, &["-H", "column_separator:,"]);
    assert_eq!(t.state("mydatabase", "exp1"), "VISIBLE");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.state("mydatabase", "exp1") != "UNKNOWN" {
        assert!(std::time::Instant::now() < deadline, "label never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn state_dir_survives_a_restart_with_labels_data_and_prepared_txns() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = || {
        let mut c = EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", PW);
        c.state_dir = Some(state.clone());
        c
    };
    {
        let t = TestEmu::start_cfg(cfg(), tempfile::tempdir().unwrap());
        let f = t.file("e.csv", CSV);
        let (_, j) = t.stream_load("mydatabase", "table1", "keep1", &f, &["-H", "column_separator:,"]);
        assert_eq!(j["Status"], "Success");
        let a = t.file("a.csv", b"VIN9\x012024-01-01 00:00:00\x01m\x01\\N\x01\\N\x01\\N\x011\x012.5\x012.5\x012.5\n");
        t.txn("begin", "rockfeed", Some("telemetry_1m"), "prep1", &[]);
        t.txn(
            "load",
            "rockfeed",
            Some("telemetry_1m"),
            "prep1",
            &["-T", a.to_str().unwrap(), "-H", "column_separator:\\x01"],
        );
        assert_eq!(t.txn("prepare", "rockfeed", None, "prep1", &[])["Status"], "OK");
    }
    // Two restarts: the second replays the compacted log (one snapshot event
    // plus the registry), and nothing may be applied twice.
    drop(TestEmu::start_cfg(cfg(), tempfile::tempdir().unwrap()));
    let log = std::fs::read_to_string(state.join("emulator.log")).unwrap();
    assert!(log.starts_with("{\"ev\":\"snapshot\""), "{}", &log[..log.len().min(200)]);
    assert_eq!(log.matches("\"ev\":\"snapshot\"").count(), 1);
    let t = TestEmu::start_cfg(cfg(), tempfile::tempdir().unwrap());
    assert_eq!(t.rows("mydatabase", "table1").len(), 4);
    assert_eq!(t.rows("mydatabase", "table1")[0], serde_json::json!({"id": 1, "name": "Lily", "score": 23}));
    assert_eq!(t.state("mydatabase", "keep1"), "VISIBLE");
    assert_eq!(t.state("rockfeed", "prep1"), "PREPARED");
    assert!(t.rows("rockfeed", "telemetry_1m").is_empty());
    assert_eq!(t.txn("commit", "rockfeed", None, "prep1", &[])["Status"], "OK");
    let rows = t.rows("rockfeed", "telemetry_1m");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["total"], 2.5);
    assert_eq!(rows[0]["window_start"], "2024-01-01 00:00:00");
    let f = t.file("e.csv", CSV);
    let (_, j) = t.stream_load("mydatabase", "table1", "keep1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["ExistingJobStatus"], "FINISHED");
    drop(t);
    // Aggregate data (SUM) must not double across yet another compaction.
    let t = TestEmu::start_cfg(cfg(), tempfile::tempdir().unwrap());
    let rows = t.rows("rockfeed", "telemetry_1m");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0]["cnt"].as_i64(), rows[0]["total"].as_f64()), (Some(1), Some(2.5)));
    assert_eq!(t.state("rockfeed", "prep1"), "VISIBLE");
}

#[test]
fn https_fe_redirects_to_plain_http_be() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("fe.pem"), dir.path().join("fe.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is required (tests/run.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = TestEmu::start_with(|c| c.fe_tls = Some((cert.clone(), key.clone())));
    assert!(t.fe.starts_with("https://"), "{}", t.fe);
    let f = t.file("e.csv", CSV);
    let url = format!("{}/api/mydatabase/table1/_stream_load", t.fe);
    let auth = format!("root:{PW}");
    let ca = cert.to_str().unwrap();
    let (_, head) = curl(&[
        "-i",
        "--cacert",
        ca,
        "-u",
        &auth,
        "-H",
        "Expect:100-continue",
        "-T",
        f.to_str().unwrap(),
        "-XPUT",
        &url,
    ]);
    let be = t.emu().be_addrs[0];
    assert!(head.contains(&format!("location: http://{be}/api/mydatabase/table1/_stream_load")), "{head}");
    let (code, out) = curl(&[
        "--cacert",
        ca,
        "--location-trusted",
        "-u",
        &auth,
        "-H",
        "label:tls1",
        "-H",
        "Expect:100-continue",
        "-H",
        "column_separator:,",
        "-T",
        f.to_str().unwrap(),
        "-XPUT",
        &url,
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\"Status\": \"Success\""), "{out}");
}

#[test]
fn advertised_unresolvable_be_host_fails_to_connect_like_the_docker_pitfall() {
    let t = TestEmu::start_with(|c| c.be_advertise = vec!["be-1.invalid:8040".into()]);
    let f = t.file("e.csv", CSV);
    let (code, _) = t.stream_load("mydatabase", "table1", "dns1", &f, &[]);
    assert_eq!(code, 6, "curl: could not resolve host");
}

#[test]
fn prepare_and_idle_timeouts_abort_transactions() {
    let t = TestEmu::start();
    let f = t.file("e.csv", CSV);
    t.txn("begin", "test_db", Some("table1"), "to1", &["-H", "timeout:1"]);
    t.txn("begin", "test_db", Some("table1"), "idle1", &["-H", "idle_transaction_timeout:1"]);
    t.txn("load", "test_db", Some("table1"), "idle1", &["-T", f.to_str().unwrap(), "-H", "column_separator: ,"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.state("test_db", "to1") != "ABORTED" || t.state("test_db", "idle1") != "ABORTED" {
        assert!(std::time::Instant::now() < deadline, "timeouts never fired");
        std::thread::sleep(Duration::from_millis(100));
    }
    let j = t.txn("prepare", "test_db", None, "idle1", &[]);
    assert_eq!(j["Status"], "TXN_NOT_EXISTS", "{j}");
}

#[test]
fn oversize_bodies_fail_with_the_streaming_load_max_mb_message() {
    let t = TestEmu::start_with(|c| c.max_body_bytes = 16);
    let f = t.file("e.csv", CSV);
    let (_, j) = t.stream_load("mydatabase", "table1", "big1", &f, &["-H", "column_separator:,"]);
    assert_eq!(j["Status"], "Fail");
    let m = j["Message"].as_str().unwrap();
    assert!(m.starts_with("body size") && m.contains("streaming_load_max_mb"), "{m}");
    assert_eq!(t.state("mydatabase", "big1"), "ABORTED");
}
