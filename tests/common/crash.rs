//! Crash-test helpers: `rockfeed run` as a child process with the test
//! hook (`ROCKFEED_TEST_HALT_AT`), its log kept, SIGKILL, and a last
//! undisturbed run that settles the tables.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loadgen::audit::audit_emulator;
use loadgen::ledger::{Ledger, TableAudit};
use rockfeed::starrocks_emulator::Emulator;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// A running child and the stderr lines it wrote.
pub struct Run {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub fn spawn(conf: &Path, halt_at: Option<String>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rockfeed"));
    cmd.arg("run").arg("--config").arg(conf);
    cmd.env("RUST_LOG", std::env::var("CRASH_RUST_LOG").unwrap_or_else(|_| "rockfeed=info,librdkafka=warn".into()));
    match &halt_at {
        Some(h) => cmd.env(rockfeed::halt::HOOK_ENV, h),
        None => cmd.env_remove(rockfeed::halt::HOOK_ENV),
    };
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l, err) = (log.clone(), child.stderr.take().unwrap());
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            l.lock().unwrap().push(line);
        }
    });
    Run { child, log }
}

impl Run {
    pub fn saw(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn tail(&self) -> String {
        let l = self.log.lock().unwrap();
        l[l.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until the child logs `needle` (or exits, or `limit` passes).
    pub async fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.saw(needle) {
                return true;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("rockfeed exited ({st}) while waiting for '{needle}':\n{}", self.tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// SIGKILL; returns the child's log.
    pub async fn kill9(mut self) -> Vec<String> {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
        self.keep_log();
        self.log.lock().unwrap().clone()
    }

    /// With `CRASH_LOG_DIR` set, keeps every child's log there.
    pub fn keep_log(&self) {
        if let Ok(d) = std::env::var("CRASH_LOG_DIR") {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::write(format!("{d}/run-{n:03}.log"), self.log.lock().unwrap().join("\n"));
        }
    }
}

/// Runs a last, undisturbed child until the audit passes, or until what
/// landed stops changing for `quiet`, then stops it with SIGINT and returns
/// the final audit.
pub async fn settle(emu: &Emulator, conf: &Path, ledger: &Ledger, quiet: Duration) -> Vec<TableAudit> {
    let mut run = spawn(conf, None);
    let t = super::emulator_tables(emu.fe_url(), true);
    let mut last = (u64::MAX, tokio::time::Instant::now());
    loop {
        let a = audit_emulator(&t, ledger).await.unwrap();
        if a.iter().all(|a| a.ok()) {
            break;
        }
        let landed = a[0].records_landed + a[0].duplicated;
        if landed != last.0 {
            last = (landed, tokio::time::Instant::now());
        } else if last.1.elapsed() > quiet {
            break;
        }
        if let Ok(Some(st)) = run.child.try_wait() {
            panic!("the final rockfeed exited ({st}):\n{}", run.tail());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pid = run.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").arg("-INT").arg(&pid).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(60), run.child.wait()).await.unwrap().unwrap();
    run.keep_log();
    assert!(exit.success(), "clean exit on SIGINT: {exit}\n{}", run.tail());
    audit_emulator(&t, ledger).await.unwrap()
}

/// Transactions still open in the emulator.
pub fn open_txns(emu: &Emulator) -> Vec<String> {
    emu.with_core(|c| {
        c.registry.all().filter(|t| t.state.is_running()).map(|t| format!("{} {}", t.label, t.state.name())).collect()
    })
}
