//! deploy/ checked where this machine allows (no container runtime here): the compose file and
//! the Kubernetes manifests parse, name images that deploy/docker builds, and use only flags and
//! environment variables the binaries take; the demo configuration and quota seed they mount are
//! valid. deploy/local-cluster.sh itself runs in `.ci/run`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_cluster_tests::bin;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str_multiple::<Value, _>(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// What `binary args… --help` prints.
fn help(binary: &str, args: &[&str]) -> String {
    let out = Command::new(bin(binary))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{binary} {args:?} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `--flags` in a list of arguments or a shell script.
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap().to_owned())
        .collect()
}

/// Checks that `binary subcommand` takes every flag and environment variable given to it.
fn check_invocation(binary: &str, args: &[String], env: &[String], place: &str) {
    let subcommand = args.iter().find(|a| !a.starts_with('-')).cloned();
    let mut path: Vec<&str> = Vec::new();
    if let Some(sub) = &subcommand {
        path.push(sub);
    }
    let text = help(binary, &path);
    let global = help(binary, &[]);
    for flag in flags(&args.join(" ")) {
        assert!(
            text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}\n")),
            "{place}: `{binary} {}` takes no {flag}",
            subcommand.unwrap_or_default()
        );
    }
    for name in env {
        assert!(
            text.contains(&format!("env: {name}")) || global.contains(&format!("env: {name}")),
            "{place}: `{binary}` reads no {name}"
        );
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => Vec::new(),
    }
}

/// The binary an image runs.
fn binary_of(image: &str) -> Option<&'static str> {
    match image.split(':').next() {
        Some("portcullis") => Some("portcullis"),
        Some("portcullis-limiter") => Some("portcullis-limiter"),
        _ => None,
    }
}

#[test]
fn the_dockerfiles_build_the_workspace_binaries_as_a_non_root_user() {
    for binary in ["portcullis", "portcullis-limiter"] {
        let path = deploy().join(format!("docker/{binary}.Dockerfile"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("-p {binary} --bin {binary}")),
            "{}",
            path.display()
        );
        assert!(
            text.matches("FROM ").count() >= 2,
            "multi-stage: {}",
            path.display()
        );
        assert!(text.contains("USER 10001"), "non-root: {}", path.display());
        // The binary it builds exists in the workspace.
        bin(binary);
    }
}

#[test]
fn the_compose_file_uses_only_what_the_binaries_take() {
    let compose = documents(&deploy().join("compose/compose.yaml")).remove(0);
    let services = compose["services"].as_object().unwrap();
    for name in [
        "gateway-1",
        "gateway-2",
        "limiter-1",
        "limiter-2",
        "postgres",
        "redis",
        "otel-collector",
        "jaeger",
    ] {
        assert!(services.contains_key(name), "compose has no {name}");
    }
    assert!(
        std::fs::read_to_string(deploy().join("compose/otel-collector.yaml"))
            .unwrap()
            .contains("jaeger:4317"),
        "the collector sends traces to Jaeger"
    );
    for (name, service) in services {
        let Some(binary) = service["image"].as_str().and_then(binary_of) else {
            continue;
        };
        if let Some(dockerfile) = service["build"]["dockerfile"].as_str() {
            assert!(
                deploy().join("..").join(dockerfile).exists(),
                "{name}: {dockerfile}"
            );
        }
        let mut args = strings(&service["command"]);
        // A shell script: the command it `exec`s. (The one-shot scripts run the commands
        // deploy/local-cluster.sh runs in CI.)
        if service["entrypoint"].to_string().contains("/bin/sh") {
            let exec = format!("exec {binary} ");
            let Some(line) = args
                .iter()
                .flat_map(|script| script.lines())
                .map(str::trim)
                .find(|line| line.starts_with(&exec))
            else {
                continue;
            };
            args = line[exec.len()..]
                .split_whitespace()
                .map(str::to_owned)
                .collect();
        }
        let env: Vec<String> = service["environment"]
            .as_object()
            .map(|e| {
                e.keys()
                    .filter(|k| k.starts_with("PORTCULLIS_") || k.starts_with("OTEL_EXPORTER"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        check_invocation(binary, &args, &env, &format!("compose service {name}"));
    }
}

/// The objects `kubectl apply -k dir` would make, read as kustomize reads them: its
/// `resources` (files, or directories with a kustomization of their own) and the ConfigMaps of
/// its `configMapGenerator` (name and keys). Like kustomize, a file outside the
/// kustomization's directory is refused.
fn kustomize(dir: &Path) -> Vec<Value> {
    let root = dir.canonicalize().unwrap();
    let kustomization = documents(&root.join("kustomization.yaml")).remove(0);
    let inside = |file: &str| {
        let path = root.join(file).canonicalize().unwrap_or_else(|e| {
            panic!("{}: {file}: {e}", root.display());
        });
        assert!(
            path.starts_with(&root),
            "{}: {file} is not in or below the kustomization (kubectl -k refuses it)",
            root.display()
        );
        path
    };
    let mut objects = Vec::new();
    for resource in strings(&kustomization["resources"]) {
        let path = root.join(&resource);
        if path.is_dir() {
            objects.extend(kustomize(&path));
        } else {
            objects.extend(documents(&inside(&resource)));
        }
    }
    for generator in kustomization["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut data = serde_json::Map::new();
        for file in strings(&generator["files"]) {
            let path = inside(&file);
            let key = path.file_name().unwrap().to_string_lossy().into_owned();
            data.insert(key, std::fs::read_to_string(&path).unwrap().into());
        }
        objects.push(serde_json::json!({
            "kind": "ConfigMap",
            "metadata": {"name": generator["name"]},
            "data": data,
        }));
    }
    objects
}

/// The object of `kind` named `name`.
fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Whether every label `selector` asks for is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn the_kubernetes_manifests_use_only_what_the_binaries_take() {
    let dir = deploy().join("k8s");
    let objects = kustomize(&dir);
    let secret = documents(&dir.join("secret.example.yaml")).remove(0);
    assert_eq!(secret["kind"], "Secret");
    let workloads: Vec<&Value> = objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "Job")))
        .collect();
    for workload in &workloads {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let spec = &workload["spec"]["template"]["spec"];
        // The volumes name a generated ConfigMap, or the Secret, with keys they hold.
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            let (source, keys) = if let Some(map) = volume["configMap"]["name"].as_str() {
                let map = named(&objects, "ConfigMap", map)
                    .unwrap_or_else(|| panic!("{name}: no ConfigMap {map}"));
                (map, &map["data"])
            } else if let Some(secret_name) = volume["secret"]["secretName"].as_str() {
                assert_eq!(secret["metadata"]["name"], secret_name, "{name}");
                (&secret, &secret["stringData"])
            } else {
                continue;
            };
            for item in volume["configMap"]["items"]
                .as_array()
                .or(volume["secret"]["items"].as_array())
                .into_iter()
                .flatten()
            {
                let key = item["key"].as_str().unwrap();
                assert!(
                    keys.get(key).is_some(),
                    "{name}: {} has no key {key}",
                    source["metadata"]["name"]
                );
            }
        }
        for container in spec["containers"].as_array().into_iter().flatten() {
            let place = format!("{name} {}", container["name"]);
            // Secret references name keys the Secret has.
            for e in container["env"].as_array().into_iter().flatten() {
                let reference = &e["valueFrom"]["secretKeyRef"];
                if let Some(key) = reference["key"].as_str() {
                    assert_eq!(secret["metadata"]["name"], reference["name"], "{place}");
                    assert!(
                        secret["stringData"].get(key).is_some(),
                        "{place}: the Secret has no {key}"
                    );
                }
            }
            let Some(binary) = container["image"].as_str().and_then(binary_of) else {
                continue;
            };
            if container["command"].to_string().contains("/bin/sh") {
                continue;
            }
            let args = strings(&container["args"]);
            let env: Vec<String> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str())
                .filter(|n| n.starts_with("PORTCULLIS_") || n.starts_with("OTEL_EXPORTER"))
                .map(str::to_owned)
                .collect();
            check_invocation(binary, &args, &env, &place);
            // Every port it declares is one it listens on.
            for port in container["ports"].as_array().into_iter().flatten() {
                let n = port["containerPort"].as_u64().unwrap();
                assert!(
                    args.iter().any(|a| a.ends_with(&format!(":{n}"))),
                    "{place}: nothing listens on {n}"
                );
            }
            // Probes name ports it declares.
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let p = &container[probe];
                if let Some(port) = p["httpGet"]["port"].as_str() {
                    assert!(
                        container["ports"].to_string().contains(port),
                        "{place}: {probe} port {port}"
                    );
                }
            }
        }
    }
    // Each Service selects a Deployment's pods and sends to ports they declare.
    for service in objects.iter().filter(|o| o["kind"] == "Service") {
        let name = service["metadata"]["name"].as_str().unwrap();
        let target = workloads
            .iter()
            .find(|w| {
                w["kind"] == "Deployment"
                    && selects(
                        &service["spec"]["selector"],
                        &w["spec"]["template"]["metadata"]["labels"],
                    )
            })
            .unwrap_or_else(|| panic!("Service {name} selects no Deployment's pods"));
        let declared = target["spec"]["template"]["spec"]["containers"].to_string();
        for port in service["spec"]["ports"].as_array().unwrap() {
            let wanted = match port["targetPort"].as_str() {
                Some(named) => format!("\"name\":\"{named}\""),
                None => format!("\"containerPort\":{}", port["targetPort"]),
            };
            assert!(
                declared.contains(&wanted),
                "Service {name}: target port {} is not declared",
                port["targetPort"]
            );
        }
    }
    // Gateways and limiter nodes each scale with an autoscaler and keep pods through voluntary
    // disruptions with a budget, both aimed at their Deployment.
    for deployment in ["portcullis-gateway", "portcullis-limiter"] {
        let d = named(&objects, "Deployment", deployment)
            .unwrap_or_else(|| panic!("no Deployment {deployment}"));
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&d["spec"]["selector"]["matchLabels"], labels),
            "{deployment}: its selector does not match its pods"
        );
        assert!(
            objects
                .iter()
                .any(|o| o["kind"] == "HorizontalPodAutoscaler"
                    && o["spec"]["scaleTargetRef"]["kind"] == "Deployment"
                    && o["spec"]["scaleTargetRef"]["name"] == deployment),
            "no autoscaler for {deployment}"
        );
        assert!(
            objects.iter().any(|o| o["kind"] == "PodDisruptionBudget"
                && selects(&o["spec"]["selector"]["matchLabels"], labels)),
            "no disruption budget for {deployment}"
        );
    }
    assert!(
        workloads.iter().any(|w| w["kind"] == "Job"),
        "no setup Job in deploy/k8s"
    );
    // Where kubectl is installed, its own rendering agrees.
    if let Ok(out) = Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        assert!(
            out.status.success(),
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered: Vec<Value> =
            serde_saphyr::from_str_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(
            rendered.len(),
            objects.len(),
            "kubectl renders as many objects"
        );
    }
}

#[test]
fn the_demo_configuration_and_quota_seed_are_valid() {
    let config = deploy().join("config/demo.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("portcullis"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["validate", "-f"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin("portcullis-limiter"))
        .args(["validate", "-f"])
        .arg(deploy().join("config/quota-seed.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
