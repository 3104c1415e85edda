//! The crate's top-level modules form layers: no import cycle between them
//! (issue 17). `model`, `budget`, `util` and the like sit at the bottom,
//! `telemetry` above them, the stages above that, and `app`, `preflight`
//! and `demo` on top. A stage that needs a type of another stage's finds it
//! in `model` instead.
//!
//! Read from the source text: every `crate::<module>` path outside comments
//! and test code is an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text of `src` that is compiled outside tests, without comments:
/// everything before the first `#[cfg(test)]` (the house style puts test
/// modules last), minus comment lines.
fn code(src: &str) -> String {
    let end = src.find("#[cfg(test)]").unwrap_or(src.len());
    src[..end].lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Top-level module → (module it imports → a file that does).
fn edges(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top = |p: &Path| -> String {
        let rel = p.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        first.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|p| top(p)).collect();
    // Files only compiled for tests (`#[cfg(test)] mod x;`).
    let mut test_only = BTreeSet::new();
    for f in &files {
        let s = std::fs::read_to_string(f).unwrap();
        for (i, _) in s.match_indices("#[cfg(test)]\nmod ") {
            let name = s[i + "#[cfg(test)]\nmod ".len()..].split(';').next().unwrap().to_string();
            test_only.insert(f.parent().unwrap().join(format!("{name}.rs")));
        }
    }
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files.iter().filter(|f| !test_only.contains(*f)) {
        let from = top(f);
        let text = code(&std::fs::read_to_string(f).unwrap());
        for (i, _) in text.match_indices("crate::") {
            let to: String =
                text[i + "crate::".len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if to != from && modules.contains(&to) && !["lib", "main"].contains(&from.as_str()) {
                let file = f.strip_prefix(src).unwrap().display().to_string();
                out.entry(from.clone()).or_default().entry(to).or_insert(file);
            }
        }
    }
    out
}

/// A cycle through `start`, if any (depth-first, shortest not needed).
fn cycle(g: &BTreeMap<String, BTreeMap<String, String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeMap<String, String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, &next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(g, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let g = edges(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(g.get("pipeline").is_some_and(|m| m.contains_key("sink")), "the reading sees the edges: {g:?}");
    for m in g.keys() {
        if let Some(c) = cycle(&g, m) {
            let mut hops = Vec::new();
            for (i, a) in c.iter().enumerate() {
                let b = &c[(i + 1) % c.len()];
                hops.push(format!("{a} → {b} ({})", g[a][b]));
            }
            panic!("import cycle: {}", hops.join(", "));
        }
    }
}

#[test]
fn the_shared_vocabulary_imports_no_other_module() {
    let g = edges(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for low in ["model", "budget", "util", "halt", "reject", "shutdown", "starrocks"] {
        assert_eq!(g.get(low), None, "{low} imports {:?}", g.get(low));
    }
    let telemetry: Vec<&String> = g["telemetry"].keys().collect();
    assert!(
        telemetry.iter().all(|m| ["budget", "httpd", "model", "reject"].contains(&m.as_str())),
        "telemetry imports only the bottom layer: {telemetry:?}"
    );
}
