//! The emulator's MySQL port against clients written independently of it:
//! the `mysql` command-line client (MariaDB's, from the Debian package
//! tests/run.sh installs), used as the StarRocks docs use it
//! (`mysql -h <fe> -P9030 -u root -p`), and mysql_async over TLS.

use std::process::Command;

use mysql_async::prelude::Queryable;
use rockfeed::starrocks::ddl::{parse_ddl, parse_table};
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig};

mod common;

const DDL: &str = include_str!("../deploy/emulator/docs_examples.sql");
const PW: &str = "s3cret";

fn config(tweak: impl FnOnce(&mut EmulatorConfig)) -> EmulatorConfig {
    let mut cfg = EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", PW);
    cfg.query = Some("127.0.0.1:0".parse().unwrap());
    tweak(&mut cfg);
    cfg
}

/// `mysql -h 127.0.0.1 -P port -u root -p… [extra…] -e sql`: exit success and what it printed.
fn mysql(port: u16, password: &str, extra: &[&str], sql: &str) -> (bool, String) {
    let out = Command::new("mysql")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "root"])
        .arg(format!("-p{password}"))
        .args(["--batch", "--raw", "--skip-column-names"])
        .args(extra)
        .args(["-e", sql])
        .output()
        .expect("the mysql client is required (tests/run.sh installs mariadb-server, which brings it)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mysql_client_reads_table_definitions_and_fe_config_as_from_starrocks() {
    let emu = Emulator::start(config(|_| {})).await.unwrap();
    let port = emu.query_addr.unwrap().port();
    let want = parse_ddl(DDL).unwrap();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        mysql(port, PW, &[], "SHOW CREATE TABLE rockfeed.telemetry_1m; USE mydatabase; SHOW TABLES; SHOW DATABASES")
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    // The definition, as StarRocks prints it, reads back as the table the DDL file defines.
    let create = out.strip_prefix("telemetry_1m\t").unwrap_or_else(|| panic!("{out}"));
    let end = create.find(");\n").unwrap_or_else(|| panic!("{out}")) + 2;
    let have = parse_table("rockfeed", &create[..end]).unwrap();
    let t = want.table("rockfeed", "telemetry_1m").unwrap();
    assert_eq!((&have.columns, have.buckets, &have.distribution), (&t.columns, 16, &t.distribution));
    assert_eq!(have.property("colocate_with"), Some("vehicle"));
    assert!(create.contains("`cnt` bigint(20) SUM NULL DEFAULT \"0\""), "{create}");
    let rest: Vec<&str> = create[end..].lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(rest, ["table1", "table2", "mydatabase", "test_db", "rockfeed"], "{out}");

    // The FE configuration, with StarRocks' columns; a LIKE pattern narrows it.
    let (ok, out) = tokio::task::spawn_blocking(move || {
        mysql(port, PW, &["--column-names"], "ADMIN SHOW FRONTEND CONFIG LIKE '%txn%'")
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "Key\tAliasNames\tValue\tType\tIsMutable\tComment\nmax_running_txn_num_per_db\t[]\t1000\tlong\ttrue\t\n"
    );

    // MySQL 8 clients start with caching_sha2_password and are switched to
    // mysql_native_password, which checks the password all the same.
    let (ok, out) =
        tokio::task::spawn_blocking(move || mysql(port, PW, &["--default-auth=caching_sha2_password"], "SELECT 1"))
            .await
            .unwrap();
    assert!(ok && out == "1\n", "{out}");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        mysql(port, "wrong", &["--default-auth=caching_sha2_password"], "SELECT 1")
    })
    .await
    .unwrap();
    assert!(!ok && out.contains("ERROR 1045 (28000): Access denied for user 'root' (using password: YES)"), "{out}");

    // StarRocks' error codes, and a plain refusal of what the emulator cannot run.
    for (sql, code, msg) in [
        ("SHOW CREATE TABLE rockfeed.nope", "ERROR 1051 (42S02)", "Unknown table 'rockfeed.nope'"),
        ("SHOW CREATE TABLE nodb.t", "ERROR 1049 (42000)", "Unknown database 'nodb'"),
        ("SHOW CREATE TABLE t", "ERROR 1046 (3D000)", "No database selected"),
        ("SELECT * FROM rockfeed.telemetry_1m", "ERROR 1064 (42000)", "no query engine"),
    ] {
        let (ok, out) = tokio::task::spawn_blocking(move || mysql(port, PW, &[], sql)).await.unwrap();
        assert!(!ok && out.contains(code) && out.contains(msg), "{sql}: {out}");
    }
    emu.shutdown().await;

    // A user without OPERATE on SYSTEM may not read the FE configuration.
    let emu = Emulator::start(config(|c| c.operate = false)).await.unwrap();
    let port = emu.query_addr.unwrap().port();
    let (ok, out) =
        tokio::task::spawn_blocking(move || mysql(port, PW, &[], "ADMIN SHOW FRONTEND CONFIG")).await.unwrap();
    assert!(!ok && out.contains("ERROR 1227 (42000)") && out.contains("OPERATE"), "{out}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_fe_speaks_tls_on_its_mysql_port_too() {
    let dir = tempfile::tempdir().unwrap();
    common::tls_material(dir.path());
    let (cert, key, ca) = (dir.path().join("server.pem"), dir.path().join("server.key"), dir.path().join("ca.pem"));
    let emu = Emulator::start(config(|c| c.fe_tls = Some((cert, key)))).await.unwrap();
    let port = emu.query_addr.unwrap().port();
    let opts = |tls: bool, pw: &str| {
        let b = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("root"))
            .pass(Some(pw.to_string()))
            .prefer_socket(false)
            .max_allowed_packet(Some(16 << 20))
            .wait_timeout(Some(28_800));
        if tls { b.ssl_opts(Some(mysql_async::SslOpts::default().with_root_certs(vec![ca.clone().into()]))) } else { b }
    };
    let mut conn = mysql_async::Conn::new(opts(true, PW)).await.unwrap();
    let dbs: Vec<String> = conn.query("SHOW DATABASES").await.unwrap();
    assert_eq!(dbs, ["mydatabase", "test_db", "rockfeed"]);
    let v: Option<(String, Option<String>)> = conn.query_first("SELECT @@version_comment, database()").await.unwrap();
    assert_eq!(v, Some(("StarRocks emulator (rockfeed)".to_string(), None)));
    conn.disconnect().await.unwrap();
    // The password is checked over TLS as well.
    match mysql_async::Conn::new(opts(true, "wrong")).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045, "{e}"),
        other => panic!("a wrong password was not refused: {:?}", other.map(|_| ())),
    }
    // A client without TLS is still served, as StarRocks serves one unless
    // the FE requires secure transport.
    let mut conn = mysql_async::Conn::new(opts(false, PW)).await.unwrap();
    let one: Option<u32> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
    emu.shutdown().await;
}
