//! The scheduling examples: systemd units (checked by `systemd-analyze
//! verify` where it is installed), a Kubernetes CronJob and a Compose
//! service (parsed), each running coffer the way the README says; their
//! coffer configs load (`every_shipped_example_parses` in the cli crate).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_yaml::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples/scheduling")
}

#[test]
fn systemd_units_verify_and_run_the_job_with_its_config() {
    let dir = examples().join("systemd");
    let service = fs::read_to_string(dir.join("coffer-backup.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/env coffer -q --json backup issuer-directory --prune"));
    assert!(service.contains("Environment=COFFER_CONFIG=/etc/coffer/coffer.toml"));
    assert!(service.contains("OnFailure=coffer-backup-failed.service"));
    let timer = fs::read_to_string(dir.join("coffer-backup.timer")).unwrap();
    assert!(timer.contains("OnCalendar=") && timer.contains("Persistent=true"));
    verify_units(
        &dir,
        &[
            "coffer-backup.service",
            "coffer-backup.timer",
            "coffer-backup-failed.service",
        ],
    );
}

/// `systemd-analyze verify` of `units` in `dir`, where it is installed.
fn verify_units(dir: &Path, units: &[&str]) {
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("systemd-analyze is not installed: the units were only read");
        return;
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// A YAML list of strings (a container's args, a service's volumes).
fn strings(list: &Value) -> Vec<&str> {
    list.as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn the_cronjob_runs_one_backup_at_a_time_with_its_config_mounted() {
    let job = yaml(&examples().join("kubernetes/cronjob.yaml"));
    assert_eq!(job["kind"], "CronJob");
    assert_eq!(job["apiVersion"], "batch/v1");
    let spec = &job["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert!(pod["serviceAccountName"].is_string());
    let container = &pod["containers"][0];
    let args: Vec<&str> = strings(&container["args"]);
    assert_eq!(
        args,
        [
            "-q",
            "--json",
            "--config",
            "/etc/coffer/coffer.toml",
            "backup",
            "--prune"
        ]
    );
    // What the config reads is mounted where it reads it.
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    let config = fs::read_to_string(examples().join("kubernetes/coffer.toml")).unwrap();
    let path = "/srv/issuer-directory/data";
    assert!(
        config.contains(path) && mounts.contains(&path),
        "{path}: {mounts:?}"
    );
    assert!(mounts.contains(&"/etc/coffer"));
}

#[test]
fn the_cronjob_service_account_may_get_exactly_the_secret_the_config_reads() {
    let job = yaml(&examples().join("kubernetes/cronjob.yaml"));
    let account = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_string();
    let namespace = job["metadata"]["namespace"].as_str().unwrap().to_string();
    let text = fs::read_to_string(examples().join("kubernetes/rbac.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let sa = of_kind("ServiceAccount");
    assert_eq!(sa["metadata"]["name"].as_str(), Some(account.as_str()));
    assert_eq!(sa["metadata"]["namespace"].as_str(), Some(namespace.as_str()));
    let role = of_kind("Role");
    let binding = of_kind("RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"].as_str(), Some(account.as_str()));

    // The config's k8s source reads Secrets the Role lets it get.
    let config: toml::Table = fs::read_to_string(examples().join("kubernetes/coffer.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let source = &config["source"]["secrets"];
    assert_eq!(source["kind"].as_str(), Some("k8s"));
    assert_eq!(source["namespace"].as_str(), Some(namespace.as_str()));
    let rule = &role["rules"][0];
    assert_eq!(rule["resources"][0], "secrets");
    assert!(rule["verbs"].as_sequence().unwrap().iter().any(|v| v == "get"));
    for name in source["names"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            rule["resourceNames"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|r| r == name),
            "{name} is not granted"
        );
    }
}

#[test]
fn the_compose_service_mounts_what_the_job_reads_and_writes() {
    let compose = yaml(&examples().join("compose/docker-compose.yaml"));
    let coffer = &compose["services"]["coffer"];
    let command: Vec<&str> = strings(&coffer["command"]);
    assert_eq!(
        command[..4],
        ["-q", "--json", "--config", "/etc/coffer/coffer.toml"]
    );
    let volumes: Vec<&str> = strings(&coffer["volumes"]);
    let config = fs::read_to_string(examples().join("coffer.toml")).unwrap();
    for path in ["/srv/issuer-directory", "/var/backups/coffer"] {
        assert!(config.contains(path), "{path}");
        assert!(
            volumes.iter().any(|v| v.split(':').nth(1) == Some(path)),
            "{path}: {volumes:?}"
        );
    }
    // The hooks stop and start the service through the Docker socket.
    assert!(config.contains("\"docker\", \"compose\"") && volumes.iter().any(|v| v.contains("docker.sock")));
}

#[test]
fn the_oplog_follower_runs_always_one_at_a_time_and_stops_gracefully() {
    let config = fs::read_to_string(examples().join("pitr.toml")).unwrap();
    assert!(config.contains("[job.issuer-directory-db.oplog]"));
    // systemd: a long-running service restarted when it stops, stopped
    // with SIGTERM and time to write its open slice; a daily base.
    let dir = examples().join("systemd");
    let service = fs::read_to_string(dir.join("coffer-oplog.service")).unwrap();
    for line in [
        "Type=simple",
        "ExecStart=/usr/bin/env coffer oplog follow issuer-directory-db",
        "Environment=COFFER_CONFIG=/etc/coffer/pitr.toml",
        "Restart=always",
        "KillSignal=SIGTERM",
    ] {
        assert!(service.lines().any(|l| l == line), "{line}");
    }
    let base = fs::read_to_string(dir.join("coffer-pitr-base.service")).unwrap();
    assert!(base.contains("backup issuer-directory-db --prune"));
    assert!(
        fs::read_to_string(dir.join("coffer-pitr-base.timer"))
            .unwrap()
            .contains("OnCalendar=")
    );
    verify_units(
        &dir,
        &[
            "coffer-oplog.service",
            "coffer-pitr-base.service",
            "coffer-pitr-base.timer",
            "coffer-backup-failed.service",
        ],
    );
    // Kubernetes: one replica, never two during a rollout, time to stop.
    let d = yaml(&examples().join("kubernetes/oplog-deployment.yaml"));
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"]["spec"];
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 60);
    let args: Vec<&str> = strings(&pod["containers"][0]["args"]);
    assert_eq!(
        args,
        [
            "--config",
            "/etc/coffer/pitr.toml",
            "oplog",
            "follow",
            "issuer-directory-db"
        ]
    );
    let env = &pod["containers"][0]["env"][0];
    assert!(
        config.contains(env["name"].as_str().unwrap()),
        "the connection string variable the config reads"
    );
    // Compose: always up, restarted, a grace period to stop.
    let compose = yaml(&examples().join("compose/docker-compose.yaml"));
    let f = &compose["services"]["coffer-oplog"];
    assert_eq!(f["restart"], "always");
    assert!(f["stop_grace_period"].is_string());
    let command: Vec<&str> = strings(&f["command"]);
    assert_eq!(
        command,
        [
            "--config",
            "/etc/coffer/pitr.toml",
            "oplog",
            "follow",
            "issuer-directory-db"
        ]
    );
}
