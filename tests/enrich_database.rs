//! Vehicle dims from a database (MariaDB, started by the test on a free port
//! in a temporary data directory): changes picked up by the next refresh,
//! the database down and back, a restart while it is down (the cache), bad
//! rows left out and counted; and through the whole pipeline, a vehicle's
//! fleet changed while its data flows.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

mod common;

use common::mariadb::MariaDb;
use rockfeed::enrich::Enrichment;
use rockfeed::enrich::db::DbConfig;
use rockfeed::model::BadRow;

fn dims() -> Vec<String> {
    vec!["fleet".into(), "model".into(), "region".into()]
}

fn db_config(port: u16, cache: &std::path::Path) -> DbConfig {
    let c: DbConfig = toml::from_str(&format!(
        "url = \"mysql://rockfeed@127.0.0.1:{port}/fleet\"\npassword = \"pw\"\ntable = \"vehicles\"\nupdated_at = \"updated_at\"\nrefresh = \"1s\"\ntimeout = \"3s\"\ncache = \"{}\"",
        cache.display()
    ))
    .unwrap();
    c.validate().unwrap();
    c
}

fn fleet_of(e: &Enrichment, vin: &str) -> Option<Option<String>> {
    let s = e.snapshot();
    s.row(vin).map(|r| r[0].as_ref().map(|v| v.to_string()))
}

/// Waits up to 10 s for `f` to hold.
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dims_follow_the_database_through_changes_bad_rows_outages_and_restarts() {
    let mut db = MariaDb::start();
    db.fleet().await;
    db.exec(&["INSERT INTO fleet.vehicles (vin, fleet, model, region) VALUES ('V1', 'f1', 'm1', 'eu'), ('V2', 'f2', 'm2', 'us')"])
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("state/enrich-cache.csv");
    let cfg = db_config(db.port, &cache);
    let stats = Arc::new(rockfeed::telemetry::Stats::default());
    let e = Enrichment::open_database(cfg.clone(), cache.clone(), &dims(), stats.clone()).await;
    assert_eq!(fleet_of(&e, "V1"), Some(Some("f1".into())), "the first fetch is in place before open returns");
    assert_eq!(stats.enrich.vehicles.load(Relaxed), 2);

    // A change: picked up by the next refresh (only changed rows fetched).
    db.exec(&["UPDATE fleet.vehicles SET fleet = 'f9' WHERE vin = 'V1'"]).await;
    until("V1 moved to f9", || fleet_of(&e, "V1") == Some(Some("f9".into()))).await;
    assert_eq!(fleet_of(&e, "V2"), Some(Some("f2".into())), "an incremental refresh keeps the unchanged rows");

    // Bad rows: left out (or NULL), counted; the rest is used.
    db.exec(&[
        "INSERT INTO fleet.vehicles (vin, fleet, model, region) VALUES ('DUP', 'a', 'm', 'r'), ('DUP', 'b', 'm', 'r'), \
         ('V3', NULL, 'm3', 'eu'), ('V4', 'f4', REPEAT('x', 200), 'eu'), (NULL, 'f', 'm', 'r'), ('V5', 'a\nb', 'm', 'r')",
    ])
    .await;
    let bad = |p: BadRow| stats.enrich.bad_rows[BadRow::ALL.iter().position(|x| *x == p).unwrap()].load(Relaxed);
    until("bad rows counted", || {
        bad(BadRow::DuplicateVin) >= 1
            && bad(BadRow::NullDim) >= 1
            && bad(BadRow::TooLong) >= 1
            && bad(BadRow::NullVin) >= 1
            && bad(BadRow::BadValue) >= 1
    })
    .await;
    until("V3 in with a NULL fleet", || fleet_of(&e, "V3") == Some(None)).await;
    for vin in ["DUP", "V4", "V5"] {
        assert_eq!(fleet_of(&e, vin), None, "{vin} is left out");
    }
    assert_eq!(fleet_of(&e, "V1"), Some(Some("f9".into())));

    // The database down: the last snapshot stays, failures are counted.
    db.down();
    let failures = stats.enrich.refresh_failures.load(Relaxed);
    until("a failed refresh", || stats.enrich.refresh_failures.load(Relaxed) > failures).await;
    assert_eq!(fleet_of(&e, "V1"), Some(Some("f9".into())));

    // A restart while it is down: enriched from the cache.
    drop(e);
    let stats2 = Arc::new(rockfeed::telemetry::Stats::default());
    let e2 = Enrichment::open_database(cfg.clone(), cache.clone(), &dims(), stats2.clone()).await;
    assert_eq!(fleet_of(&e2, "V1"), Some(Some("f9".into())), "from the cache");
    assert_eq!(fleet_of(&e2, "V3"), Some(None));
    assert_eq!(stats2.enrich.refresh_failures.load(Relaxed), 1, "the first fetch failed");

    // And back: the next refresh sees what changed meanwhile.
    db.up();
    db.exec(&["UPDATE fleet.vehicles SET fleet = 'f7' WHERE vin = 'V2'"]).await;
    until("V2 moved to f7 after the outage", || fleet_of(&e2, "V2") == Some(Some("f7".into()))).await;
    assert!(stats2.enrich.refreshes.load(Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_changed_while_data_flows_reaches_the_rows_from_the_next_refresh_on() {
    let db = MariaDb::start();
    db.fleet().await;
    db.exec(&["INSERT INTO fleet.vehicles (vin, fleet, model, region) VALUES ('CAR1', 'north', 'm1', 'eu')"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let rest = format!(
        r#"
[tables]
dims = ["fleet", "model", "region"]
buckets = 8
replication_num = 1
[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "rockfeed-enrich-db"
topics = ["telemetry/#"]
protocol = "5"
[enrich]
unknown_vehicle = "drop"
[enrich.database]
url = "mysql://rockfeed@127.0.0.1:{db}/fleet"
password = "pw"
table = "vehicles"
updated_at = "updated_at"
refresh = "1s"
"#,
        db = db.port,
    );
    let toml = common::config_toml(dir.path(), "enrichdb", 2, &rest);
    let mut cfg = rockfeed::config::Config::parse(&toml).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    let app = common::run_app(cfg, &emu).await;
    let now = rockfeed::util::now_ms() as i64;
    let publish = |tag: &str, from: i64| {
        (0..10)
            .map(|i| {
                let p =
                    format!(r#"{{"vin":"CAR1","ts":{},"seq":{},"metrics":{{"speed":{i}}}}}"#, now + from + i, from + i);
                (format!("telemetry/{tag}"), p)
            })
            .collect::<Vec<_>>()
    };
    // And a vehicle the registry does not know: dropped (enrich.unknown_vehicle), counted.
    let mut first = publish("a", 0);
    first.extend(publish("a", 50).into_iter().map(|(t, p)| (t, p.replace("CAR1", "GHOST"))));
    common::publish_v5(rumqttc::v5::MqttOptions::new("pub-enrich-1", "127.0.0.1", port), first).await;
    let fleets = |emu: &rockfeed::starrocks_emulator::Emulator| {
        let mut by_fleet = std::collections::BTreeMap::<String, f64>::new();
        for r in emu.with_core(|c| c.table("rockfeed", "telemetry_1m").unwrap().rows()) {
            *by_fleet.entry(r[3].to_string()).or_default() += r[6].as_f64().unwrap();
        }
        by_fleet
    };
    until("the first ten readings loaded under north", || fleets(&emu).get("north") == Some(&10.0)).await;
    db.exec(&["UPDATE fleet.vehicles SET fleet = 'south' WHERE vin = 'CAR1'"]).await;
    // The refresh that carries it comes within a second; wait for it to land.
    let refreshes = app.stats.enrich.refreshes.load(Relaxed);
    until("a refresh after the change", || app.stats.enrich.refreshes.load(Relaxed) > refreshes + 1).await;
    common::publish_v5(rumqttc::v5::MqttOptions::new("pub-enrich-2", "127.0.0.1", port), publish("b", 100)).await;
    until("the next ten under south", || fleets(&emu).get("south") == Some(&10.0)).await;
    let stats = app.stop().await;
    assert_eq!(fleets(&emu), [("north".to_string(), 10.0), ("south".to_string(), 10.0)].into_iter().collect());
    use rockfeed::model::UnknownVehicle as U;
    assert_eq!(stats.enrich.unknown(U::Drop).load(Relaxed), 10, "GHOST's samples");
    assert_eq!(
        (stats.enrich.unknown(U::Keep).load(Relaxed), stats.enrich.unknown(U::DeadLetter).load(Relaxed)),
        (0, 0)
    );
    assert_eq!(stats.rejected.total(), 0, "dropping is not refusing: no dead letters");
    assert_eq!(stats.samples.load(Relaxed), 20, "only CAR1's samples go on");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified_against_the_configured_ca() {
    let certs = tempfile::tempdir().unwrap();
    common::tls_material(certs.path());
    // mariadbd reads the key as the user it runs as.
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::set_permissions(certs.path().join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let db = MariaDb::start_tls(certs.path());
    db.fleet().await;
    db.exec(&["ALTER USER 'rockfeed'@'%' REQUIRE SSL", "INSERT INTO fleet.vehicles (vin, fleet) VALUES ('T1', 'tls')"])
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache.csv");
    let plain = db_config(db.port, &cache);
    let mut tls = plain.clone();
    tls.tls_ca_file = Some(certs.path().join("ca.pem"));
    tls.check().unwrap();
    // Without TLS the server refuses the user; with it, the dims come.
    let e = rockfeed::enrich::db::fetch(&plain, &dims(), None).await.unwrap_err();
    assert!(e.contains("connect"), "{e}");
    let f = rockfeed::enrich::db::fetch(&tls, &dims(), None).await.unwrap();
    assert_eq!(f.rows, vec![("T1".to_string(), vec![Some("tls".to_string()), None, None])]);
    // A CA that did not sign the server's certificate is refused.
    let other = tempfile::tempdir().unwrap();
    common::tls_material(other.path());
    let mut wrong = tls.clone();
    wrong.tls_ca_file = Some(other.path().join("ca.pem"));
    let e = rockfeed::enrich::db::fetch(&wrong, &dims(), None).await.unwrap_err();
    assert!(e.contains("connect"), "{e}");
}
