//! A MariaDB server for tests (Debian's mariadb-server): its own data
//! directory in a temporary directory, a free port on 127.0.0.1, started,
//! stopped and started again by the test, the way mosquitto is.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mysql_async::prelude::Queryable;

fn find(names: &[&str]) -> PathBuf {
    names
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .expect("mariadb-server is not installed: run tests/run.sh, which installs it (apt-get install mariadb-server)")
}

fn as_root() -> bool {
    // SAFETY-free: the effective uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

pub struct MariaDb {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Further server options (TLS).
    extra: Vec<String>,
    /// The data directory.
    data: PathBuf,
}

impl MariaDb {
    /// A new server with an empty data directory, running.
    pub fn start() -> MariaDb {
        Self::start_with(&[])
    }

    /// The same with TLS: `dir` holds [`super::tls_material`]'s files.
    pub fn start_tls(dir: &Path) -> MariaDb {
        let f = |n: &str| dir.join(n).display().to_string();
        Self::start_with(&[
            format!("--ssl-ca={}", f("ca.pem")),
            format!("--ssl-cert={}", f("server.pem")),
            format!("--ssl-key={}", f("server.key")),
        ])
    }

    fn start_with(extra: &[String]) -> MariaDb {
        let dir = tempfile::tempdir().unwrap();
        let install = find(&["/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db"]);
        // Setting up the data directory is the server's own tool; it failed
        // once in ~20 runs here (output lost), so it gets a second attempt
        // on a fresh directory, and a failure shows everything it said.
        let mut last = String::new();
        for attempt in 0..2 {
            let data = dir.path().join(format!("data{attempt}"));
            let mut cmd = Command::new(&install);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db");
            if as_root() {
                cmd.arg("--user=root");
            }
            let out = cmd.output().unwrap();
            if out.status.success() {
                if attempt > 0 {
                    eprintln!("mariadb-install-db needed a second attempt; the first said: {last}");
                }
                let mut db = MariaDb { dir, port: super::free_port(), child: None, extra: extra.to_vec(), data };
                db.up();
                return db;
            }
            last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        panic!("mariadb-install-db failed twice: {last}");
    }

    /// Starts the server (again) on its data directory and port.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "already running");
        let d = self.dir.path();
        let mut cmd = Command::new(find(&["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=16M")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if as_root() {
            cmd.arg("--user=root");
        }
        self.child = Some(cmd.spawn().unwrap());
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
        panic!("mariadbd did not start on port {}: {log}", self.port);
    }

    /// Kills the server (an outage; InnoDB recovers at the next start).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs statements as root.
    pub async fn exec(&self, sql: &[&str]) {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("root"))
            .prefer_socket(false);
        let mut conn = mysql_async::Conn::new(opts).await.unwrap();
        for s in sql {
            conn.query_drop(*s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        conn.disconnect().await.unwrap();
    }

    /// A `fleet` database with a `vehicles` table (no key on vin, so a
    /// test can put a vin in twice), and a user `rockfeed` (password `pw`)
    /// that may read it.
    pub async fn fleet(&self) {
        self.exec(&[
            "CREATE DATABASE fleet",
            "CREATE TABLE fleet.vehicles (vin VARCHAR(64) NULL, fleet VARCHAR(255) NULL, model VARCHAR(255) NULL, \
             region VARCHAR(255) NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) \
             ON UPDATE CURRENT_TIMESTAMP(6))",
            "CREATE USER 'rockfeed'@'%' IDENTIFIED BY 'pw'",
            "GRANT SELECT ON fleet.* TO 'rockfeed'@'%'",
        ])
        .await;
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.down();
    }
}
