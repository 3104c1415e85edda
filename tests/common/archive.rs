//! Reading the raw archive back with an independent reader: pyarrow (from
//! PyPI, in `target/pyenv`, installed by tests/run.sh) opens the archive
//! root as a Hive-partitioned dataset.

use std::collections::HashSet;
use std::path::Path;

use loadgen::ledger::{Agg, LandedRow, Ledger, TableAudit, audit_aggregates};

/// The Python interpreter with pyarrow.
pub fn python() -> String {
    std::env::var("ROCKFEED_TEST_PYTHON").unwrap_or_else(|_| {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
        assert!(
            std::path::Path::new(p).exists(),
            "pyarrow is missing: run tests/run.sh (it installs it into target/pyenv)"
        );
        p.to_string()
    })
}

/// One reading as pyarrow read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedReading {
    pub vin: String,
    pub ts_ms: i64,
    pub metric: String,
    pub value: f64,
    pub seq: Option<i64>,
    pub dt: String,
    pub hour: String,
    pub source: String,
    pub file: String,
}

const PY: &str = r#"
import sys
import pyarrow.dataset as ds
import pyarrow.compute as pc
import pyarrow as pa
src = sys.argv[1]
# The partition values as the layout writes them ("hour=00"): inferred,
# pyarrow would read hours 00-09 as the integers 0-9.
parts = ds.partitioning(flavor="hive", schema=pa.schema([("dt", pa.string()), ("hour", pa.string())]))
if src.startswith("s3://"):
    from pyarrow import fs
    s3 = fs.S3FileSystem(endpoint_override=sys.argv[2], access_key=sys.argv[3], secret_key=sys.argv[4], region="us-east-1", scheme="http")
    d = ds.dataset(src[5:], format="parquet", partitioning=parts, filesystem=s3)
else:
    d = ds.dataset(src, format="parquet", partitioning=parts)
out = sys.stdout
for frag in d.get_fragments():
    t = frag.to_table(schema=d.schema)
    name = frag.path.rsplit("/", 1)[-1]
    ts = pc.cast(pc.cast(t["ts"], pa.timestamp("ms")), pa.int64()).to_pylist()
    cols = [t[c].to_pylist() for c in ("vin", "metric", "value", "seq", "dt", "hour", "source")]
    for i in range(t.num_rows):
        vin, metric, value, seq, dt, hour, source = (c[i] for c in cols)
        out.write(f"{vin}\t{ts[i]}\t{metric}\t{value!r}\t{'' if seq is None else seq}\t{dt}\t{hour}\t{source}\t{name}\n")
"#;

/// Every reading under `root` (a directory, or `s3://bucket/prefix` with
/// `s3 = (endpoint, key, secret)`), read by pyarrow.
pub fn read_archive(root: &str, s3: Option<(&str, &str, &str)>) -> Vec<ArchivedReading> {
    let mut cmd = std::process::Command::new(python());
    cmd.arg("-c").arg(PY).arg(root);
    if let Some((e, k, s)) = s3 {
        cmd.args([e, k, s]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "pyarrow: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            ArchivedReading {
                vin: f[0].into(),
                ts_ms: f[1].parse().unwrap(),
                metric: f[2].into(),
                value: f[3].parse().unwrap(),
                seq: (!f[4].is_empty()).then(|| f[4].parse().unwrap()),
                dt: f[5].into(),
                hour: f[6].into(),
                source: f[7].into(),
                file: f[8].into(),
            }
        })
        .collect()
}

/// Checks the archive against what was sent: every reading exactly once
/// ((vin, ts, metric) unique, per-(vin, window, metric) count, sum, min and
/// max equal to the ledger's), each in the Hive partition of its event time.
pub fn audit_archive(rows: &[ArchivedReading], sent: &Ledger) -> Result<TableAudit, String> {
    let mut seen = HashSet::new();
    for r in rows {
        if !seen.insert((r.vin.as_str(), r.ts_ms, r.metric.as_str())) {
            return Err(format!("reading archived twice: {r:?}"));
        }
        let (dt, hour) = rockfeed::archive::layout::partition_of(r.ts_ms);
        if (dt.as_str(), hour.as_str()) != (r.dt.as_str(), r.hour.as_str()) {
            return Err(format!("reading in the wrong partition: {r:?}"));
        }
        if r.source.is_empty() {
            return Err(format!("reading without a source: {r:?}"));
        }
    }
    let w = sent.window_ms;
    let landed = rows.iter().map(|r| LandedRow {
        vin: r.vin.clone(),
        window_ms: r.ts_ms.div_euclid(w) * w,
        metric: r.metric.clone(),
        agg: Agg::one(r.value),
    });
    Ok(audit_aggregates("archive", sent, landed))
}

/// Files under `root`'s table directory that are not finished Parquet
/// files in the layout (staging leftovers, temporary names).
pub fn stray_files(root: &Path, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(table)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = e.file_name().to_string_lossy().into_owned();
                if rockfeed::archive::layout::parse_file_name(&name).is_none() {
                    out.push(p.display().to_string());
                }
            }
        }
    }
    out
}

/// moto's S3-compatible server (PyPI), killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Moto {
    pub fn start(port: u16) -> Moto {
        let child = std::process::Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let py = format!(
            "import boto3; boto3.client('s3', endpoint_url='{}', aws_access_key_id='rk', aws_secret_access_key='rs', region_name='us-east-1').create_bucket(Bucket='{bucket}')",
            self.endpoint()
        );
        let out = std::process::Command::new(python()).args(["-c", &py]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
