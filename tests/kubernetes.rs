//! `deploy/kubernetes/`, checked without a cluster (there is none on the
//! build machines): the StatefulSet's image is pinned; the Services and the
//! PodDisruptionBudget select its pods; each instance's label prefix and
//! MQTT client id are its pod name; every secret comes from a Secret; the
//! probes and the port are on the telemetry listener; a volume holds
//! everything rockfeed writes; and the ConfigMap's `rockfeed.toml` passes
//! `rockfeed check` with a pod's environment, its container paths mapped
//! through the mounts.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

mod common;

/// Every document of every file, by kind and name.
fn manifests() -> BTreeMap<(String, String), Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            for d in common::yaml_documents(&p) {
                let key =
                    (d["kind"].as_str().unwrap().to_string(), d["metadata"]["name"].as_str().unwrap().to_string());
                assert!(out.insert(key.clone(), d).is_none(), "{key:?} twice");
            }
        }
    }
    out
}

fn get<'a>(m: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    m.get(&(kind.to_string(), name.to_string())).unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Whether every label `selector` asks for is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let s = selector.as_object().expect("a selector");
    !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_statefulset_services_and_budget_fit_together() {
    let m = manifests();
    let sts = get(&m, "StatefulSet", "rockfeed");
    let pod = &sts["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert!(selects(&sts["spec"]["selector"]["matchLabels"], labels));
    for svc in ["rockfeed", "rockfeed-metrics"] {
        assert!(selects(&get(&m, "Service", svc)["spec"]["selector"], labels), "Service {svc} selects no pod");
    }
    assert_eq!(sts["spec"]["serviceName"], "rockfeed");
    assert_eq!(get(&m, "Service", "rockfeed")["spec"]["clusterIP"], "None", "a StatefulSet's Service is headless");
    assert!(selects(&get(&m, "PodDisruptionBudget", "rockfeed")["spec"]["selector"]["matchLabels"], labels));

    let spec = &pod["spec"];
    assert!(spec["terminationGracePeriodSeconds"].as_u64().unwrap() >= 90, "30 s to seal and load, 60 s of archive");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let c = &spec["containers"][0];
    let image = c["image"].as_str().unwrap();
    assert!(common::pinned(image), "{image} is not pinned");

    // Per instance: the pod name, defined before the variables that use it.
    let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
    let at = |n: &str| env.iter().position(|e| e["name"] == n).unwrap_or_else(|| panic!("no {n}"));
    assert_eq!(env[at("POD_NAME")]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    for v in ["ROCKFEED_LABEL_PREFIX", "ROCKFEED_MQTT_CLIENT_ID"] {
        assert_eq!(env[at(v)]["value"], "$(POD_NAME)", "{v}");
        assert!(at("POD_NAME") < at(v), "{v} is defined before POD_NAME, which it uses");
    }
    for e in &env {
        let name = e["name"].as_str().unwrap();
        if name.contains("PASSWORD") || name.contains("SECRET") {
            assert!(e.get("value").is_none() && e["valueFrom"]["secretKeyRef"].is_object(), "{name} from a Secret");
        }
    }

    // Probes and the port on the telemetry listener.
    let port = &c["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
    for p in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[p]["httpGet"]["port"], "metrics", "{p}");
    }
    let toml = get(&m, "ConfigMap", "rockfeed")["data"]["rockfeed.toml"].as_str().unwrap();
    let cfg = rockfeed::config::Config::parse(toml).unwrap();
    assert_eq!(cfg.telemetry.listen.map(|a| u64::from(a.port())), port["containerPort"].as_u64());

    // A volume per instance where rockfeed writes.
    let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str().unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let data = mounts.iter().find(|v| v["name"] == claim).expect("the claim is mounted");
    let root = data["mountPath"].as_str().unwrap();
    let mut dirs = vec![&cfg.pipeline.state_dir, &cfg.wal.dir, &cfg.dead_letter.dir];
    if cfg.archive.enabled {
        dirs.push(&cfg.archive.spool_dir);
    }
    for d in dirs {
        assert!(d.starts_with(root), "{} is not on the instance's volume ({root})", d.display());
    }
}

#[test]
fn the_configmap_passes_rockfeed_check_as_a_pod_sees_it() {
    let m = manifests();
    let sts = get(&m, "StatefulSet", "rockfeed");
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    // The ConfigMap's keys as files where the pod mounts it; the claim as a
    // fresh directory.
    let mut map: Vec<(String, std::path::PathBuf)> = Vec::new();
    for v in c["volumeMounts"].as_array().unwrap() {
        let (name, at) = (v["name"].as_str().unwrap(), v["mountPath"].as_str().unwrap().to_string());
        let here = dir.path().join(name);
        std::fs::create_dir_all(&here).unwrap();
        let vol = sts["spec"]["template"]["spec"]["volumes"].as_array().unwrap().iter().find(|x| x["name"] == name);
        if let Some(cm) = vol.and_then(|x| x["configMap"]["name"].as_str()) {
            for (file, body) in get(&m, "ConfigMap", cm)["data"].as_object().unwrap() {
                std::fs::write(here.join(file), body.as_str().unwrap()).unwrap();
                if file == "rockfeed.toml" {
                    text = body.as_str().unwrap().to_string();
                }
            }
        }
        map.push((at, here));
    }
    assert!(!text.is_empty(), "the pod mounts no rockfeed.toml");
    let text = common::as_mounted(&text, &mut map);
    let path = dir.path().join("pod.toml");
    std::fs::write(&path, &text).unwrap();
    let pod = format!("{}-0", sts["metadata"]["name"].as_str().unwrap());
    let (ok, said) = common::rockfeed_check(
        &path,
        &[],
        &[
            ("ROCKFEED_LABEL_PREFIX", &pod),
            ("ROCKFEED_MQTT_CLIENT_ID", &pod),
            ("ROCKFEED_STARROCKS_PASSWORD", "from-the-secret"),
        ],
    );
    assert!(ok, "rockfeed check refused the ConfigMap's config:\n{said}\n{text}");
    assert!(said.contains(&format!("label prefix {pod}")), "the pod's prefix is the one used: {said}");
    // An unexpanded $(POD_NAME) is refused, naming the variable.
    let (ok, said) = common::rockfeed_check(&path, &[], &[("ROCKFEED_LABEL_PREFIX", "$(POD_NAME)")]);
    assert!(!ok && said.contains("ROCKFEED_LABEL_PREFIX"), "{said}");
}
