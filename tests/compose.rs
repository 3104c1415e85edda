//! The container image and the compose stack, checked without Docker (it
//! cannot run on the build machines; the stack itself is not exercised in
//! CI):
//! - `deploy/compose/compose.yaml`: every image pinned to a version (or
//!   built from this repository), every bind-mounted file present in the
//!   repository, every named volume declared, no host port used twice, and
//!   the rockfeed config it mounts passes `rockfeed check` with the stack's
//!   environment, its container paths mapped to what the mounts put there;
//! - `deploy/docker/Dockerfile`: pinned base images, a non-root user, a
//!   healthcheck on `/health`, and a `.dockerignore` that keeps build output
//!   and history out of the context.
//!
//! The YAML is read by PyYAML (`common::yaml_documents`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn compose_dir() -> PathBuf {
    Path::new(ROOT).join("deploy/compose")
}

fn yaml(path: &Path) -> Value {
    common::yaml_documents(path).remove(0)
}

fn services(c: &Value) -> &serde_json::Map<String, Value> {
    c["services"].as_object().expect("services")
}

/// A mount's (source, target), from `src:dst[:mode]`.
fn mount(v: &Value) -> (String, String) {
    let s = v.as_str().expect("short volume syntax");
    let mut parts = s.splitn(3, ':');
    (parts.next().unwrap().to_string(), parts.next().unwrap_or_else(|| panic!("{s}: no target")).to_string())
}

fn is_bind(src: &str) -> bool {
    src.starts_with('.') || src.starts_with('/')
}

#[test]
fn every_image_is_pinned_and_every_mount_and_port_is_sound() {
    let c = yaml(&compose_dir().join("compose.yaml"));
    let declared: BTreeSet<&String> = c["volumes"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
    let mut host_ports: BTreeMap<String, String> = BTreeMap::new();
    for (name, s) in services(&c) {
        let image = s["image"].as_str().unwrap_or_else(|| panic!("{name}: no image"));
        let (repo, tag) = image.rsplit_once(':').unwrap_or_else(|| panic!("{name}: {image} has no tag"));
        assert!(!repo.is_empty() && !tag.is_empty() && !repo.ends_with('/'), "{name}: {image}");
        if s.get("build").is_none() {
            assert!(common::pinned(image), "{name}: {image} is not pinned to a version");
        }
        for v in s["volumes"].as_array().into_iter().flatten() {
            let (src, _) = mount(v);
            if is_bind(&src) {
                let p = compose_dir().join(&src);
                assert!(p.is_file(), "{name}: mounts {src}, which is not a file in the repository");
            } else {
                assert!(declared.contains(&src), "{name}: volume {src} is not declared");
            }
        }
        for p in s["ports"].as_array().into_iter().flatten() {
            let p = p.as_str().expect("ports as strings");
            let parts: Vec<&str> = p.split(':').collect();
            assert!(parts.len() >= 2, "{name}: {p} publishes no host port");
            let host = parts[parts.len() - 2].to_string();
            if let Some(other) = host_ports.insert(host.clone(), name.clone()) {
                panic!("host port {host} is published by both {other} and {name}");
            }
        }
        if let Some(deps) = s["depends_on"].as_object() {
            for d in deps.keys() {
                assert!(services(&c).contains_key(d), "{name} depends on {d}, which is not a service");
            }
        }
    }
    assert!(services(&c).contains_key("starrocks") && services(&c).contains_key("loadgen"), "the stack's core");
    // Prometheus and Grafana get the repository's own rules and dashboard.
    let mounted: Vec<String> =
        services(&c).values().flat_map(|s| s["volumes"].as_array().into_iter().flatten().map(|v| mount(v).0)).collect();
    for f in ["../prometheus/rockfeed.rules.yml", "../grafana/rockfeed.json"] {
        assert!(mounted.iter().any(|m| m == f), "{f} is not mounted");
    }
}

#[test]
fn the_stack_config_passes_rockfeed_check() {
    let c = yaml(&compose_dir().join("compose.yaml"));
    let rf = &services(&c)["rockfeed"];
    let dir = tempfile::tempdir().unwrap();
    // Container path → where it is here: the repository's file for a bind
    // mount, a fresh directory for a named volume.
    let mut map: Vec<(String, PathBuf)> = Vec::new();
    let mut config = None;
    for v in rf["volumes"].as_array().unwrap() {
        let (src, dst) = mount(v);
        let here = if is_bind(&src) {
            compose_dir().join(&src).canonicalize().unwrap()
        } else {
            let d = dir.path().join(&src);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        if dst == "/etc/rockfeed/rockfeed.toml" {
            config = Some(here.clone());
        }
        map.push((dst, here));
    }
    let config = config.expect("the rockfeed service mounts /etc/rockfeed/rockfeed.toml");
    let text = common::as_mounted(&std::fs::read_to_string(&config).unwrap(), &mut map);
    assert!(!text.contains("/var/lib/rockfeed") && !text.contains("/etc/rockfeed"), "an unmounted path:\n{text}");
    let path = dir.path().join("rockfeed.toml");
    std::fs::write(&path, &text).unwrap();
    let env: Vec<(&str, &str)> = rf["environment"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().expect("environment values as strings")))
        .collect();
    let (ok, said) = common::rockfeed_check(&path, &[], &env);
    assert!(ok, "rockfeed check refused the stack's config:\n{said}\n{text}");
    assert!(said.contains(": OK"), "{said}");
}

#[test]
fn the_image_is_slim_non_root_and_checks_health() {
    let d = std::fs::read_to_string(Path::new(ROOT).join("deploy/docker/Dockerfile")).unwrap();
    let froms: Vec<&str> = d.lines().filter_map(|l| l.strip_prefix("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: a build and a runtime stage");
    for f in &froms {
        let image = f.split_whitespace().next().unwrap();
        assert!(common::pinned(image), "FROM {image} is not pinned to a version");
    }
    assert!(froms[0].starts_with("rust:") && froms[1].contains("slim"), "{froms:?}");
    let runtime = &d[d.rfind("\nFROM ").unwrap()..];
    assert!(runtime.contains("\nUSER rockfeed") && runtime.contains("useradd"), "runs as a non-root user");
    assert!(runtime.contains("VOLUME") && runtime.contains("HEALTHCHECK") && runtime.contains("/health"));
    assert!(d.contains("--locked"), "the image builds the locked dependency set");
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    for p in ["target", ".git"] {
        assert!(ignore.lines().any(|l| l.trim() == p), ".dockerignore leaves {p} in the context");
    }
    // What the Dockerfile copies out of the context exists.
    for l in d.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let src = l.split_whitespace().nth(1).unwrap();
        assert!(src == "." || Path::new(ROOT).join(src).exists(), "{l}: {src} is not in the repository");
    }
}
