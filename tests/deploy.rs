//! The deployment files in `deploy/` agree with the binary and with each other: the
//! systemd units pass `systemd-analyze verify`; the Kubernetes manifests' probes, ports,
//! mounts and grace period match the daemon's endpoint and the ConfigMap's config; the
//! Docker files match the defaults (store volume, config path, health check, secrets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contact_sync::config::{self, Secrets, Settings};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every YAML document of every manifest in `deploy/kubernetes/`.
fn manifests() -> Vec<Value> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", f.display()));
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
}

/// Loads a config text the way the binary does (defaults < file), without secrets.
fn load_config(text: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    config::load_with(&path, Secrets::Skip).unwrap_or_else(|e| panic!("{e}"))
}

/// `api_key_file` of every provider in a config text.
fn key_files(text: &str) -> Vec<String> {
    let raw: toml::Value = toml::from_str(text).unwrap();
    raw["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.get("api_key_file")
                .and_then(toml::Value::as_str)
                .unwrap_or_else(|| panic!("provider {p} has no api_key_file"))
                .to_owned()
        })
        .collect()
}

fn as_u64(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The mount path of the volume `name` in a container.
fn mount_path<'a>(container: &'a Value, name: &str) -> &'a str {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("no mount of volume {name}"))
}

/// The volume behind the mount that holds `path`.
fn volume_holding<'a>(container: &'a Value, path: &Path) -> &'a str {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .and_then(|m| m["name"].as_str())
        .unwrap_or_else(|| panic!("{} is on no mounted volume", path.display()))
}

/// The value after `flag` in a container's args.
fn arg_after<'a>(container: &'a Value, flag: &str) -> &'a str {
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let i = args.iter().position(|a| *a == flag).unwrap();
    args[i + 1]
}

/// Checks what both the StatefulSet and the CronJob pods must get right.
fn check_pod(pod: &Value, docs: &[Value], settings: &Settings, config_text: &str) -> Value {
    let container = pod["containers"][0].clone();
    // Config: `--config` is the ConfigMap's config.toml where the config volume is mounted.
    let config_mount = mount_path(&container, "config");
    let config_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    let configmap = find(docs, "ConfigMap");
    assert_eq!(
        config_volume["configMap"]["name"],
        configmap["metadata"]["name"]
    );
    assert_eq!(
        arg_after(&container, "--config"),
        format!("{config_mount}/config.toml")
    );
    // Store on the data volume (a PVC), never on the read-only root filesystem.
    assert_eq!(
        volume_holding(&container, &settings.store_path),
        "data",
        "the store path must be on the PVC mount"
    );
    // Every api_key_file is a key of the Secret, under the Secret's mount.
    let secret_mount = mount_path(&container, "secrets");
    let secret = find(docs, "Secret");
    let secret_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "secrets")
        .unwrap();
    assert_eq!(
        secret_volume["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    for file in key_files(config_text) {
        let name = Path::new(&file)
            .strip_prefix(secret_mount)
            .unwrap_or_else(|_| panic!("{file} is not under the Secret mount {secret_mount}"));
        let key = name.to_str().unwrap();
        assert!(
            secret["stringData"].get(key).is_some() || secret["data"].get(key).is_some(),
            "the Secret has no key {key} for {file}"
        );
    }
    // Non-root, read-only root filesystem, fsGroup for the volumes.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(as_u64(&pod["securityContext"]["runAsUser"]) > 0);
    assert!(as_u64(&pod["securityContext"]["fsGroup"]) > 0);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    // SIGTERM, then the daemon may take shutdown_timeout: the grace period is longer.
    let grace = as_u64(&pod["terminationGracePeriodSeconds"]);
    assert!(
        grace > settings.shutdown_timeout.as_secs(),
        "terminationGracePeriodSeconds {grace} must exceed sync.shutdown_timeout {:?}",
        settings.shutdown_timeout
    );
    container
}

#[test]
fn kubernetes_statefulset_agrees_with_the_binary_and_the_configmap() {
    let docs = manifests();
    let configmap = find(&docs, "ConfigMap");
    let config_text = configmap["data"]["config.toml"].as_str().unwrap();
    let settings = load_config(config_text);
    let listen = settings
        .http_listen
        .expect("the ConfigMap's config needs [http] listen for the probes");
    assert!(
        listen.ip().is_unspecified(),
        "the kubelet probes the pod IP: listen on 0.0.0.0, not {listen}"
    );

    let sts = find(&docs, "StatefulSet");
    assert_eq!(
        as_u64(&sts["spec"]["replicas"]),
        1,
        "one replica per tenant"
    );
    let pod = &sts["spec"]["template"]["spec"];
    let container = check_pod(pod, &docs, &settings, config_text);
    // The store's volume comes from the claim template.
    let claims: Vec<&str> = sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(claims, vec!["data"]);
    // No sync-now: this is the daemon.
    assert!(
        !container["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--sync-now")
    );

    // Probes: /healthz and /readyz on the port the config listens on.
    let ports = container["ports"].as_array().unwrap();
    let resolve = |port: &Value| -> u64 {
        match port.as_str() {
            Some(name) => as_u64(
                &ports
                    .iter()
                    .find(|p| p["name"] == name)
                    .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"],
            ),
            None => as_u64(port),
        }
    };
    let live = &container["livenessProbe"]["httpGet"];
    let ready = &container["readinessProbe"]["httpGet"];
    assert_eq!(live["path"], "/healthz");
    assert_eq!(ready["path"], "/readyz");
    assert_eq!(resolve(&live["port"]), u64::from(listen.port()));
    assert_eq!(resolve(&ready["port"]), u64::from(listen.port()));
    // The Service and the scrape annotation point at the same port.
    let service = find(&docs, "Service");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(sts["spec"]["serviceName"], service["metadata"]["name"]);
    assert_eq!(
        as_u64(&service["spec"]["ports"][0]["port"]),
        u64::from(listen.port())
    );
    assert_eq!(
        as_u64(&sts["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]),
        u64::from(listen.port())
    );
}

#[test]
fn kubernetes_cronjob_runs_sync_now_with_the_same_config_and_its_own_claim() {
    let docs = manifests();
    let configmap = find(&docs, "ConfigMap");
    let config_text = configmap["data"]["config.toml"].as_str().unwrap();
    let settings = load_config(config_text);
    let cron = find(&docs, "CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = check_pod(pod, &docs, &settings, config_text);
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--sync-now")
    );
    let data = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap();
    let claim = data["persistentVolumeClaim"]["claimName"].as_str().unwrap();
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "PersistentVolumeClaim" && d["metadata"]["name"] == claim),
        "the CronJob's claim {claim} is declared"
    );
}

#[test]
fn kustomization_lists_existing_manifests() {
    let docs = manifests();
    let k = find(&docs, "Kustomization");
    for r in k["resources"].as_array().unwrap() {
        let rel = format!("deploy/kubernetes/{}", r.as_str().unwrap());
        assert!(repo().join(&rel).is_file(), "{rel} is missing");
    }
}

/// The instruction lines of a Dockerfile's last stage (continuations joined).
fn runtime_stage(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let lines: Vec<String> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[last_from..].to_vec()
}

#[test]
fn dockerfile_runs_non_root_with_the_store_volume_and_the_healthcheck() {
    let dockerfile = read("deploy/docker/Dockerfile");
    assert!(dockerfile.contains("FROM rust:1.95-bookworm AS builder"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    // The image is built with the checkout's build settings (the bundled SQLite's
    // compile-time options), before the dependencies are, and they are in the context.
    let copy_cargo = dockerfile.find("COPY .cargo .cargo").expect("COPY .cargo");
    assert!(copy_cargo < dockerfile.find("cargo build").unwrap());
    assert!(repo().join(".cargo/config.toml").is_file());
    assert!(
        read("deploy/docker/Dockerfile.dockerignore")
            .lines()
            .any(|l| l.trim() == "!.cargo/")
    );
    let stage = runtime_stage(&dockerfile);
    let has =
        |prefix: &str| -> Vec<&String> { stage.iter().filter(|l| l.starts_with(prefix)).collect() };
    assert_eq!(
        has("FROM ")[0],
        "FROM gcr.io/distroless/cc-debian12:nonroot"
    );
    let user = has("USER ");
    assert_eq!(user.len(), 1);
    assert!(
        !user[0].contains("root") || user[0].contains("nonroot"),
        "{}",
        user[0]
    );
    assert_ne!(user[0].as_str(), "USER 0");
    // The default store path (no config needed) is in the volume.
    let defaults =
        load_config("[[providers]]\nname = \"a\"\nkind = \"agentalk\"\napi_key_env = \"X\"\n");
    let volume = has("VOLUME ");
    assert_eq!(volume.len(), 1);
    let store_dir = defaults.store_path.parent().unwrap().to_str().unwrap();
    assert!(
        volume[0].contains(&format!("\"{store_dir}\"")),
        "{}",
        volume[0]
    );
    // Health check through the binary (no curl in distroless), SIGTERM to stop.
    let health = has("HEALTHCHECK ");
    assert_eq!(health.len(), 1);
    assert!(health[0].contains("\"/usr/bin/contact-sync\", \"healthcheck\""));
    assert_eq!(has("STOPSIGNAL ")[0], "STOPSIGNAL SIGTERM");
    assert!(has("ENTRYPOINT ")[0].contains("/usr/bin/contact-sync"));
    assert!(has("CMD ")[0].contains(config::SYSTEM_CONFIG));
    // The store directory belongs to the non-root user (65532 is distroless' nonroot).
    assert!(
        stage
            .iter()
            .any(|l| l.contains("--chown=65532:65532") && l.ends_with(store_dir)),
        "the store directory must be owned by the runtime user"
    );
}

#[test]
fn docker_sample_config_and_compose_agree() {
    let config_text = read("deploy/docker/config.toml");
    let settings = load_config(&config_text);
    let dockerfile = read("deploy/docker/Dockerfile");
    let stage = runtime_stage(&dockerfile);
    let volume = stage.iter().find(|l| l.starts_with("VOLUME ")).unwrap();
    let store_dir = settings.store_path.parent().unwrap().to_str().unwrap();
    assert!(
        volume.contains(store_dir),
        "store {store_dir} not in {volume}"
    );
    let listen = settings
        .http_listen
        .expect("[http] listen for the HEALTHCHECK");
    assert!(stage.contains(&format!("EXPOSE {}", listen.port())));

    let compose: Value = serde_saphyr::from_str(&read("deploy/docker/compose.yaml")).unwrap();
    let service = &compose["services"]["contact-sync"];
    // Config mounted where the image looks; store on a volume at the store directory.
    let volumes: Vec<&str> = service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(volumes.contains(&"./config.toml:/etc/contact-sync/config.toml:ro"));
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(&format!(":{store_dir}")))
    );
    // Secrets: each api_key_file is /run/secrets/<a declared secret given to the service>.
    let given: Vec<&str> = service["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for file in key_files(&config_text) {
        let name = file
            .strip_prefix("/run/secrets/")
            .unwrap_or_else(|| panic!("{file} is not a Docker secret"));
        assert!(
            given.contains(&name),
            "secret {name} is not given to the service"
        );
        assert!(
            compose["secrets"][name]["file"].is_string(),
            "secret {name} is not declared"
        );
    }
    // The endpoint is published on the host's loopback only, on the listen port.
    let ports: Vec<&str> = service["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(ports, vec![format!("127.0.0.1:{0}:{0}", listen.port())]);
    // Docker waits longer than the daemon's shutdown bound before SIGKILL.
    let grace = humantime::parse_duration(service["stop_grace_period"].as_str().unwrap()).unwrap();
    assert!(grace > settings.shutdown_timeout);
    assert_eq!(service["stop_signal"], "SIGTERM");
}

/// `systemd-analyze verify` of a unit copied to a temp dir with ExecStart pointing at the
/// built binary; returns (exit ok, stderr lines about our units).
fn verify_unit(file: &str, verify_as: &str) -> Option<(bool, Vec<String>)> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = read(&format!("deploy/systemd/{file}"));
    assert!(text.contains("ExecStart=/usr/bin/contact-sync "));
    let text = text.replace("/usr/bin/contact-sync", env!("CARGO_BIN_EXE_contact-sync"));
    std::fs::write(dir.path().join(file), text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("./{verify_as}"))
        .current_dir(dir.path())
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stem = file.trim_end_matches(".service");
    let ours: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(stem) || l.contains(dir.path().to_str().unwrap()))
        .map(str::to_owned)
        .collect();
    Some((out.status.success(), ours))
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    for (file, verify_as) in [
        ("contact-sync.service", "contact-sync.service"),
        // A template is verified through an instance of it.
        ("contact-sync@.service", "contact-sync@acme.service"),
    ] {
        let Some((ok, complaints)) = verify_unit(file, verify_as) else {
            return;
        };
        assert!(
            ok,
            "systemd-analyze verify {verify_as} failed: {complaints:?}"
        );
        assert!(
            complaints.is_empty(),
            "systemd-analyze verify {verify_as} complained:\n{}",
            complaints.join("\n")
        );
    }
}

#[test]
fn systemd_units_are_notify_hardened_and_use_credentials() {
    for file in ["contact-sync.service", "contact-sync@.service"] {
        let text = read(&format!("deploy/systemd/{file}"));
        let has = |line: &str| {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "{file} lacks `{line}`"
            );
        };
        has("Type=notify");
        has("Restart=on-failure");
        has("DynamicUser=yes");
        has("ProtectSystem=strict");
        has("NoNewPrivileges=yes");
        has("PrivateTmp=yes");
        has("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6");
        has("SystemCallFilter=@system-service");
        assert!(text.lines().any(|l| l.starts_with("LoadCredential=")));
        assert!(text.lines().any(|l| l.starts_with("WatchdogSec=")));
        // Stop timeout longer than the default shutdown bound.
        let stop: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(stop > 30);
    }
    let template = read("deploy/systemd/contact-sync@.service");
    for line in [
        "ExecStart=/usr/bin/contact-sync --config /etc/contact-sync/%i.toml",
        "StateDirectory=contact-sync/%i",
        "Environment=CONTACT_SYNC_STORE__PATH=/var/lib/contact-sync/%i/contacts.db",
    ] {
        assert!(
            template.lines().any(|l| l == line),
            "template lacks `{line}`"
        );
    }
    let single = read("deploy/systemd/contact-sync.service");
    assert!(
        single
            .lines()
            .any(|l| l == "ExecStart=/usr/bin/contact-sync --config /etc/contact-sync/config.toml")
    );
    assert!(single.lines().any(|l| l == "StateDirectory=contact-sync"));
}
