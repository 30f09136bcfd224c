//! The scheduling examples: systemd units (checked by `systemd-analyze
//! verify` where it is installed), a Kubernetes CronJob and a Compose
//! service (parsed), each running coffer the way the README says; their
//! coffer configs load (`every_shipped_example_parses` in the cli crate).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("systemd-analyze is not installed: the units were only read");
        return;
    }
    let units = [
        "coffer-backup.service",
        "coffer-backup.timer",
        "coffer-backup-failed.service",
    ];
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
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
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
    for path in ["/secrets/issuer-directory", "/srv/issuer-directory/data"] {
        assert!(
            config.contains(path) && mounts.contains(&path),
            "{path}: {mounts:?}"
        );
    }
    assert!(mounts.contains(&"/etc/coffer"));
}

#[test]
fn the_compose_service_mounts_what_the_job_reads_and_writes() {
    let compose = yaml(&examples().join("compose/docker-compose.yaml"));
    let coffer = &compose["services"]["coffer"];
    let command: Vec<&str> = coffer["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command[..4],
        ["-q", "--json", "--config", "/etc/coffer/coffer.toml"]
    );
    let volumes: Vec<&str> = coffer["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
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
