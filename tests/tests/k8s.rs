//! The `k8s` source against the stand-in API server (`coffer_e2e::k8s`,
//! TLS + bearer tokens; no real API server can run on the test machines):
//! selection by name and label, sanitization, create/replace on restore
//! with optimistic concurrency and rollback, dry-run key lists, 401/403
//! hints, and a round trip with the real `kubectl`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use coffer_e2e::k8s::{ADMIN_TOKEN, K8sServer, READER_TOKEN};
use coffer_e2e::{coffer, forge_bundle, json_ok, keygen, require_tool};
use serde_json::{Value, json};

const NS: &str = "issuer";
const DB: &str = "issuer-directory-secrets";
const TLS: &str = "issuer-directory-tls";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The stand-in with the runbook's Secrets, plus one of another app.
fn server() -> K8sServer {
    let server = K8sServer::start();
    server.put(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": DB, "namespace": NS,
            "labels": {"app": "issuer-directory"},
            "annotations": {
                "team": "identity",
                "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"ISSUER_DIRECTORY_MONGO_PASSWORD\":\"c2VjcmV0LXB3LTQy\"}}"
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": "1"}]
        },
        "data": {
            "ISSUER_DIRECTORY_MONGO_URI": b64("mongodb://issuer:secret-pw-42@db:27017/issuer"),
            "ISSUER_DIRECTORY_MONGO_PASSWORD": b64("secret-pw-42"),
        }
    }));
    server.put(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": TLS, "namespace": NS, "labels": {"app": "issuer-directory"}},
        "data": {"tls.crt": b64("CERT-PEM-7781"), "tls.key": b64("KEY-PEM-9913")}
    }));
    server.put(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "billing", "namespace": NS, "labels": {"app": "billing"}},
        "data": {"token": b64("billing-token-5521")}
    }));
    server
}

/// Values of the Secrets above: none may appear in any output.
const VALUES: [&str; 5] = [
    "secret-pw-42",
    "c2VjcmV0LXB3LTQy",
    "CERT-PEM-7781",
    "KEY-PEM-9913",
    "S0VZLVBFTS05OTEz",
];

fn assert_no_values(text: &str) {
    for v in VALUES {
        assert!(!text.contains(v), "a secret value ({v}) was printed: {text}");
    }
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config whose job `main` backs up `source` (extra lines of the k8s
/// source table) to sink `bk`, with a kubeconfig for `token`; returns the
/// identity file.
fn config(dir: &Path, server: &K8sServer, token: &str, source: &str) -> PathBuf {
    let _ = fs::remove_file(dir.join("key.txt"));
    let (key, rec) = keygen(dir, "key.txt");
    let kubeconfig = server.kubeconfig(dir, "kubeconfig", token);
    fs::write(
        dir.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n[source.k8s]\nkind = \"k8s\"\nnamespace = \"{NS}\"\nkubeconfig = \"kubeconfig\"\n{source}\n\
             [sink.bk]\nkind = \"local\"\npath = \"bk\"\ncreate = true\n[job.main]\nsources = [\"k8s\"]\nsinks = [\"bk\"]\n"
        ),
    )
    .unwrap();
    assert!(kubeconfig.is_file());
    key
}

fn data(server: &K8sServer, ns: &str, name: &str) -> Value {
    server
        .get(ns, name)
        .map(|s| s["data"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn backs_up_by_label_and_by_name_and_stores_sanitized_manifests() {
    let server = server();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = config(p, &server, ADMIN_TOKEN, "selector = \"app=issuer-directory\"");
    let out = coffer(p).args(["-v", "--json", "backup"]).output().unwrap();
    assert_no_values(&output_text(&out));
    let v = json_ok(&out);
    let secrets = &v["sources"][0]["details"]["secrets"];
    let names: Vec<&str> = secrets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [DB, TLS], "{v}");
    assert_eq!(
        secrets[0]["keys"],
        json!(["ISSUER_DIRECTORY_MONGO_PASSWORD", "ISSUER_DIRECTORY_MONGO_URI"])
    );
    assert_eq!(secrets[1]["type"], "kubernetes.io/tls");

    // The manifests, written under --target without touching the cluster.
    let before = server.requests().len();
    let out = coffer(p)
        .args(["restore", "latest", "--target", "out", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_no_values(&output_text(&out));
    assert_eq!(server.requests().len(), before, "--target must not call the API");
    let file = p.join(format!("out/{NS}/{DB}.json"));
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let stored: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["data"], data(&server, NS, DB));
    assert_eq!(stored["type"], "Opaque");
    assert_eq!(stored["metadata"]["labels"], json!({"app": "issuer-directory"}));
    assert_eq!(
        stored["metadata"]["annotations"],
        json!({"team": "identity"}),
        "last-applied dropped"
    );
    for dropped in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "ownerReferences",
    ] {
        assert!(
            stored["metadata"].get(dropped).is_none(),
            "{dropped} kept: {stored}"
        );
    }
    assert!(p.join(format!("out/{NS}/{TLS}.json")).is_file());
    assert!(!p.join(format!("out/{NS}/billing.json")).exists());

    // One-off, by name, through KUBECONFIG as kubectl would (in a
    // directory without a config file).
    let oneoff = p.join("oneoff");
    fs::create_dir(&oneoff).unwrap();
    let (_, rec) = keygen(&oneoff, "key.txt");
    let out = coffer(&oneoff)
        .args([
            "--json",
            "backup",
            "--source",
            &format!("k8s:{NS}/{TLS}"),
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .env("KUBECONFIG", p.join("kubeconfig"))
        .output()
        .unwrap();
    let v = json_ok(&out);
    assert_eq!(v["sources"][0]["details"]["secrets"][0]["name"], TLS, "{v}");
    assert_eq!(v["sources"][0]["details"]["secrets"].as_array().unwrap().len(), 1);
}

#[test]
fn restore_creates_and_replaces_and_a_dry_run_lists_keys_only() {
    let server = server();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = config(p, &server, ADMIN_TOKEN, &format!("names = [\"{DB}\", \"{TLS}\"]"));
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    let backed_up = data(&server, NS, DB);
    let tls = data(&server, NS, TLS);

    // The incident: the TLS Secret deleted, the DB Secret changed.
    server.delete(NS, TLS);
    let mut live = server.get(NS, DB).unwrap();
    live["data"]["ISSUER_DIRECTORY_MONGO_PASSWORD"] = json!(b64("rotated-by-mistake"));
    live["data"]["EXTRA"] = json!(b64("added-later"));
    server.put(live);
    let changed = data(&server, NS, DB);

    let out = coffer(p)
        .args(["--json", "restore", "latest", "--dry-run", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert_no_values(&output_text(&out));
    let v = json_ok(&out);
    let text = v.to_string();
    for expected in [
        format!("\"action\":\"create\",\"target\":\"Secret {NS}/{TLS}\""),
        format!("\"action\":\"replace\",\"target\":\"Secret {NS}/{DB}\""),
        format!("\"action\":\"change-key\",\"target\":\"{NS}/{DB}: ISSUER_DIRECTORY_MONGO_PASSWORD\""),
        format!("\"action\":\"keep-key\",\"target\":\"{NS}/{DB}: ISSUER_DIRECTORY_MONGO_URI\""),
        format!("\"action\":\"remove-key\",\"target\":\"{NS}/{DB}: EXTRA\""),
        format!("\"action\":\"add-key\",\"target\":\"{NS}/{TLS}: tls.key\""),
    ] {
        assert!(text.contains(&expected), "{expected} missing: {v}");
    }
    assert!(!text.contains("rotated-by-mistake"));
    assert_eq!(data(&server, NS, DB), changed, "a dry run changes nothing");
    assert!(server.get(NS, TLS).is_none());

    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_no_values(&output_text(&out));
    assert_eq!(data(&server, NS, DB), backed_up);
    assert_eq!(data(&server, NS, TLS), tls);
    assert_eq!(server.get(NS, TLS).unwrap()["type"], "kubernetes.io/tls");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r == &format!("PUT /api/v1/namespaces/{NS}/secrets/{DB}"))
    );

    // Into another namespace (a drill's scratch namespace).
    let out = coffer(p)
        .args([
            "restore",
            "latest",
            "--k8s-namespace",
            "issuer-drill",
            "--identity",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(server.names("issuer-drill"), [DB, TLS]);
    assert_eq!(data(&server, "issuer-drill", DB), backed_up);
    assert_eq!(
        server.get("issuer-drill", DB).unwrap()["metadata"]["namespace"],
        "issuer-drill"
    );
}

#[test]
fn a_concurrent_change_is_a_conflict_and_what_was_written_is_put_back() {
    let server = server();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = config(p, &server, ADMIN_TOKEN, &format!("names = [\"{DB}\", \"{TLS}\"]"));
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    for name in [DB, TLS] {
        let mut live = server.get(NS, name).unwrap();
        live["data"]["NEW"] = json!(b64("live-only"));
        server.put(live);
    }
    let db_before = data(&server, NS, DB);
    // Someone changes the TLS Secret right after coffer read it: the DB
    // Secret is replaced first, then the TLS replace conflicts.
    server.change_after_next_get(NS, TLS);
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("409") && text.contains("has been modified"),
        "{text}"
    );
    assert!(text.contains("back as they were"), "{text}");
    assert_no_values(&text);
    assert_eq!(data(&server, NS, DB), db_before, "the DB Secret was rolled back");
    assert_eq!(
        data(&server, NS, TLS)["changed-by-someone-else"],
        "eWVz",
        "the other writer's change stays"
    );
}

#[test]
fn unauthorized_forbidden_and_missing_get_clear_errors() {
    let server = server();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    config(p, &server, "expired-token", &format!("names = [\"{DB}\"]"));
    let out = coffer(p).arg("backup").output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("401") && text.contains("credentials"), "{text}");
    assert!(
        !text.contains("expired-token"),
        "the token is never printed: {text}"
    );

    // A reader may back up, not restore.
    let key = config(p, &server, READER_TOKEN, &format!("names = [\"{DB}\"]"));
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    server.delete(NS, DB);
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("403") && text.contains("cannot create") && text.contains("RoleBinding"),
        "{text}"
    );
    assert!(server.get(NS, DB).is_none());

    // A kubeconfig whose CA is not the server's: refused, with a hint.
    let other = K8sServer::start();
    config(p, &other, ADMIN_TOKEN, &format!("names = [\"{DB}\"]"));
    let kubeconfig = fs::read_to_string(p.join("kubeconfig")).unwrap();
    fs::write(
        p.join("kubeconfig"),
        kubeconfig.replace(&other.url(), &server.url()),
    )
    .unwrap();
    let out = coffer(p).arg("backup").output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(
        !text.contains("ERROR"),
        "one message, not kube's log line too: {text}"
    );
    drop(other);

    config(p, &server, ADMIN_TOKEN, "names = [\"no-such-secret\"]");
    let out = coffer(p).arg("backup").output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("issuer/no-such-secret") && text.contains("not found"),
        "{text}"
    );
    config(p, &server, ADMIN_TOKEN, "selector = \"app=nothing\"");
    let out = coffer(p).arg("backup").output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("matches the selector"), "{text}");
}

fn kubectl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .current_dir(dir)
        .args(args)
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOME", dir)
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .output()
        .expect("run kubectl")
}

#[test]
fn kubectl_apply_then_coffer_backup_and_restore_then_kubectl_get() {
    if !require_tool("kubectl") {
        return;
    }
    let server = K8sServer::start();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = config(p, &server, ADMIN_TOKEN, "names = [\"app-secrets\"]");
    fs::write(
        p.join("secret.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secrets\n  namespace: {NS}\n  labels:\n    app: demo\n\
             type: Opaque\nstringData:\n  DB_PASSWORD: kubectl-made-pw-314\n"
        ),
    )
    .unwrap();
    let out = kubectl(p, &["apply", "-f", "secret.yaml", "--validate=false"]);
    assert!(out.status.success(), "kubectl apply: {}", output_text(&out));
    let applied = server.get(NS, "app-secrets").expect("kubectl created it");
    assert_eq!(applied["data"]["DB_PASSWORD"], b64("kubectl-made-pw-314"));

    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    server.delete(NS, "app-secrets");
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));

    let out = kubectl(p, &["get", "secret", "app-secrets", "-n", NS, "-o", "json"]);
    assert!(out.status.success(), "kubectl get: {}", output_text(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["data"], applied["data"]);
    assert_eq!(got["metadata"]["labels"], json!({"app": "demo"}));
    assert!(
        got["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .is_none(),
        "{got}"
    );

    // kubectl applies a manifest coffer wrote under --target.
    server.delete(NS, "app-secrets");
    let out = coffer(p)
        .args(["restore", "latest", "--target", "out", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let manifest = format!("out/{NS}/app-secrets.json");
    let out = kubectl(p, &["apply", "-f", &manifest, "--validate=false"]);
    assert!(out.status.success(), "kubectl apply: {}", output_text(&out));
    assert_eq!(server.get(NS, "app-secrets").unwrap()["data"], applied["data"]);

    // A missing Secret: kubectl's own NotFound.
    let out = kubectl(p, &["get", "secret", "nope", "-n", NS, "-o", "json"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"nope\" not found"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn the_configured_context_is_used_instead_of_the_current_one() {
    let server = server();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    config(
        p,
        &server,
        ADMIN_TOKEN,
        &format!("names = [\"{DB}\"]\ncontext = \"test\""),
    );
    // The kubeconfig's current context is another one, whose user the
    // server rejects.
    let text = fs::read_to_string(p.join("kubeconfig")).unwrap();
    let text = text
        .replace("current-context: test", "current-context: broken")
        .replace(
            "contexts:\n",
            "contexts:\n- name: broken\n  context:\n    cluster: standin\n    user: nobody\n",
        )
        .replace(
            "users:\n",
            "users:\n- name: nobody\n  user:\n    token: not-a-valid-token\n",
        );
    fs::write(p.join("kubeconfig"), text).unwrap();
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());

    let toml = fs::read_to_string(p.join("coffer.toml")).unwrap();
    fs::write(p.join("coffer.toml"), toml.replace("context = \"test\"\n", "")).unwrap();
    let out = coffer(p).arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(output_text(&out).contains("401"), "{}", output_text(&out));
}

#[test]
fn a_drill_restores_secrets_into_a_scratch_namespace_and_removes_them() {
    let server = server();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = config(p, &server, ADMIN_TOKEN, "selector = \"app=issuer-directory\"");
    json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    let before = data(&server, NS, DB);

    let out = coffer(p)
        .args(["--json", "drill", "--keep", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    assert_no_values(&output_text(&out));
    let v = json_ok(&out);
    assert_eq!(v["passed"], true, "{v}");
    let scratch = v["scratch"]["k8s_namespace"].as_str().unwrap().to_string();
    assert!(scratch.starts_with("coffer-drill-"), "{v}");
    assert_eq!(server.names(&scratch), [DB, TLS]);
    assert_eq!(data(&server, &scratch, DB), before);
    assert_eq!(data(&server, NS, DB), before, "the source namespace is untouched");
    std::fs::remove_dir_all(v["scratch"]["dir"].as_str().unwrap()).unwrap();

    let v = json_ok(
        &coffer(p)
            .args(["--json", "drill", "-i"])
            .arg(&key)
            .output()
            .unwrap(),
    );
    assert_eq!(v["scratch"]["cleanup_error"], Value::Null, "{v}");
    // Its own scratch namespace, removed; the one the --keep drill left is
    // not its to touch.
    let second = v["scratch"]["k8s_namespace"].as_str().unwrap().to_string();
    assert_ne!(
        second, scratch,
        "two drills of one snapshot share a scratch namespace"
    );
    assert!(server.names(&second).is_empty(), "scratch Secrets removed");
    assert_eq!(
        server.names(&scratch),
        [DB, TLS],
        "the kept drill's Secrets were touched"
    );
    assert_eq!(server.names(NS), ["billing", DB, TLS]);

    // A cleanup that fails fails the drill (non-zero), naming what is left.
    server.fail_deletes();
    let out = coffer(p)
        .args(["--json", "drill", "-i"])
        .arg(&key)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", output_text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], false, "{v}");
    assert!(v["scratch"]["cleanup_error"].is_string(), "{v}");
    let cleanup = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "cleanup");
    assert_eq!(cleanup.map(|c| c["passed"].clone()), Some(json!(false)), "{v}");
}

/// A bundle re-packed by someone with write access to the sink (hashes and
/// index made consistent, unsigned) that adds a Secret under another
/// namespace never chooses where it goes: the config says `issuer`, so
/// the restore is refused before anything is written.
#[test]
fn a_forged_secret_in_another_namespace_is_refused() {
    if !(require_tool("age") && require_tool("zstd") && require_tool("python3")) {
        return;
    }
    let server = server();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = config(p, &server, ADMIN_TOKEN, &format!("names = [\"{DB}\"]"));
    let v = json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    let id = v["id"].as_str().unwrap();
    let rec = fs::read_to_string(p.join("coffer.toml")).unwrap();
    let rec = rec.split('"').nth(1).unwrap().to_string();
    let edit = format!(
        r#"
src = next(n for n in data if n.endswith("/{NS}/{DB}.json"))
doc = json.loads(data[src])
doc["metadata"]["name"], doc["metadata"]["namespace"] = "injected", "kube-system"
data[src.replace("/{NS}/{DB}.json", "/kube-system/injected.json")] = json.dumps(doc).encode()
"#
    );
    forge_bundle(&p.join("bk"), id, &key, &rec, &edit);
    server.delete(NS, DB);
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    let t = output_text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("namespace `kube-system`"), "{t}");
    assert!(
        server.names("kube-system").is_empty(),
        "a Secret was created in kube-system"
    );
    assert!(server.get(NS, DB).is_none(), "nothing was written: {t}");
}

/// A Secret with a 253-character name (the longest valid one) is stored
/// under a file name that fits 255 bytes, the real name inside: plain
/// `tar x` of the bundle works, and it restores to the cluster and under
/// `--target` under its real name.
#[test]
fn a_secret_with_the_longest_valid_name_round_trips() {
    if !(require_tool("age") && require_tool("zstd") && require_tool("tar")) {
        return;
    }
    let server = server();
    let long = format!("{}-end", "s".repeat(249));
    assert_eq!(long.len(), 253);
    server.put(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": long, "namespace": NS, "labels": {"app": "issuer-directory"}},
        "data": {"k": b64("long-name-value")}
    }));
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = config(p, &server, ADMIN_TOKEN, "selector = \"app=issuer-directory\"");
    let v = json_ok(&coffer(p).args(["--json", "backup"]).output().unwrap());
    let id = v["id"].as_str().unwrap();
    let before = data(&server, NS, &long);

    // Standard tools: every path component fits.
    fs::create_dir(p.join("x")).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i {} bk/{id}.coffer | zstd -d | tar x -C x",
            key.display()
        ))
        .current_dir(p)
        .status()
        .unwrap();
    assert!(st.success(), "tar x failed");

    server.delete(NS, &long);
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(data(&server, NS, &long), before);
    let out = coffer(p)
        .args(["restore", "latest", "--target", "out", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let stored: Vec<String> = fs::read_dir(p.join("out").join(NS))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        stored.iter().any(|t| t.contains(&long)),
        "the real name is inside"
    );
}

/// Kubernetes Secrets round-trip through a chunked snapshot too.
#[test]
fn secrets_round_trip_through_a_chunked_snapshot() {
    let server = server();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let key = config(p, &server, ADMIN_TOKEN, &format!("names = [\"{DB}\", \"{TLS}\"]"));
    let v = json_ok(
        &coffer(p)
            .args(["--json", "backup", "--format", "chunked"])
            .output()
            .unwrap(),
    );
    assert!(v["chunks"].is_object(), "{v}");
    let backed_up = data(&server, NS, DB);
    server.delete(NS, TLS);
    let mut live = server.get(NS, DB).unwrap();
    live["data"]["ISSUER_DIRECTORY_MONGO_PASSWORD"] = json!(b64("rotated-by-mistake"));
    server.put(live);
    let out = coffer(p)
        .args(["restore", "latest", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_no_values(&output_text(&out));
    assert_eq!(data(&server, NS, DB), backed_up);
    assert!(server.get(NS, TLS).is_some());
}
