//! Puts the git commit into `rockfeed --version`: `ROCKFEED_GIT_COMMIT` when
//! set (a container build, whose context has no `.git`), else git's answer,
//! else `unknown` (e.g. a source tarball).

fn main() {
    println!("cargo:rerun-if-env-changed=ROCKFEED_GIT_COMMIT");
    let given = std::env::var("ROCKFEED_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty() && c != "unknown");
    let commit = given
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ROCKFEED_GIT_COMMIT={commit}");
    // A new commit or a checkout changes HEAD (or the ref it points at).
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
