//! Chunked snapshots end to end: deduplication across runs and hosts,
//! restore with coffer and with the README's standard-tools block, keyless
//! verify and prune, copies, secrets never deduplicated, and killed runs.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_e2e::{coffer, files_under, json_ok, keygen, noise, require_tool};
use serde_json::Value;

/// A service tree: two large files (own chunks), small ones, a .env.
fn tree(p: &Path) {
    fs::create_dir_all(p.join("svc/conf/sub")).unwrap();
    fs::write(p.join("svc/blob.bin"), noise(3 << 20)).unwrap();
    let text: String = (0..60_000)
        .map(|i| format!("{{\"id\": {i}, \"v\": \"entry {i}\"}}\n"))
        .collect();
    fs::write(p.join("svc/data.jsonl"), text).unwrap();
    fs::write(p.join("svc/conf/a.yaml"), "a: 1\n").unwrap();
    fs::write(p.join("svc/conf/sub/b.json"), "{\"b\": 2}\n").unwrap();
    fs::create_dir_all(p.join("secrets")).unwrap();
    fs::write(p.join("secrets/.env"), "KEEP=1\nAPP_SECRET=hunter2-chunked\n").unwrap();
}

/// `backup --json --format chunked` of `svc` (files and the .env secret).
fn backup(dir: &Path, sink: &str, rec: &str, extra: &[&str]) -> Value {
    let out = coffer(dir)
        .args(["--json", "backup", "--format", "chunked"])
        .args(["--source", "file:svc", "--source", "env:secrets/.env#APP_*"])
        .args(["--sink", sink, "--recipient", rec])
        .args(extra)
        .output()
        .unwrap();
    json_ok(&out)
}

fn chunks(report: &Value) -> (u64, u64, u64) {
    let c = &report["chunks"];
    (
        c["chunks"].as_u64().unwrap(),
        c["new_chunks"].as_u64().unwrap(),
        c["new_bytes"].as_u64().unwrap(),
    )
}

fn restore(dir: &Path, sink: &str, key: &Path, id: &str, target: &str) {
    let out = coffer(dir)
        .args(["restore", id, "--sink", sink, "--identity"])
        .arg(key)
        .args(["--target", target])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn same_file(a: &Path, b: &Path) {
    assert_eq!(
        fs::read(a).unwrap(),
        fs::read(b).unwrap(),
        "{} differs",
        b.display()
    );
}

fn pack_files(sink: &Path) -> Vec<PathBuf> {
    files_under(&sink.join("data"))
        .into_iter()
        .map(|f| sink.join("data").join(f))
        .collect()
}

/// The text of a stored chunk list (one zstd frame).
fn list_text(list: &Path) -> String {
    String::from_utf8(zstd_decode(&fs::read(list).unwrap())).unwrap()
}

fn zstd_decode(b: &[u8]) -> Vec<u8> {
    let out = Command::new("zstd")
        .args(["-d", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn addresses(list: &Path) -> HashSet<String> {
    list_text(list)
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn an_unchanged_rerun_stores_almost_nothing_and_both_snapshots_restore() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    let first = backup(p, "bk", &rec, &[]);
    let (n, new, new_bytes) = chunks(&first);
    assert_eq!(n, new, "a first backup stores every chunk: {first}");
    assert!(new_bytes > 3 << 20, "{first}");
    // The dedup key was made for this host, private.
    let dedup = p.join(".config/coffer/dedup.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&dedup).unwrap().permissions().mode() & 0o777, 0o600);

    let second = backup(p, "bk", &rec, &[]);
    let (n2, new2, new_bytes2) = chunks(&second);
    assert_eq!(n2, n, "{second}");
    // Only coffer's own entries (sources.json, SHA256SUMS,
    // manifest.json, the tar's end blocks) and the secret are new: a few
    // KiB.
    assert!(new2 <= 6 && new_bytes2 < 64 << 10, "{second}");

    // A changed big file: only its own chunks change.
    let mut blob = fs::read(p.join("svc/blob.bin")).unwrap();
    blob.extend_from_slice(&noise(100_000));
    fs::write(p.join("svc/blob.bin"), &blob).unwrap();
    let third = backup(p, "bk", &rec, &[]);
    let (_, _, new_bytes3) = chunks(&third);
    assert!(
        new_bytes3 < (3 << 20) + (200 << 10),
        "appending 100 KB to one 3 MiB file: {third}"
    );
    assert!(new_bytes3 > 100_000, "{third}");

    let listed = json_ok(
        &coffer(p)
            .args(["--json", "list", "--sink", "bk"])
            .output()
            .unwrap(),
    );
    let rows = listed[0]["snapshots"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r["format"] == "chunked" && r["state"] == "complete"),
        "{listed}"
    );

    for (report, target) in [(&first, "out1"), (&third, "out3")] {
        restore(p, "bk", &key, report["id"].as_str().unwrap(), target);
    }
    same_file(&p.join("svc/blob.bin"), &p.join("out3/blob.bin"));
    same_file(&p.join("svc/data.jsonl"), &p.join("out1/data.jsonl"));
    same_file(&p.join("svc/conf/sub/b.json"), &p.join("out1/conf/sub/b.json"));
    assert_eq!(fs::read(p.join("out1/blob.bin")).unwrap().len(), 3 << 20);
    let env = fs::read_to_string(p.join("out1/.env")).unwrap();
    assert!(env.contains("APP_SECRET=hunter2-chunked"), "{env}");

    let out = coffer(p)
        .args(["verify", "--all", "--sink", "bk"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = coffer(p)
        .args(["verify", "latest", "--deep", "--sink", "bk", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("files match SHA256SUMS"));
}

#[test]
fn secrets_are_never_deduplicated_and_never_stored_in_plaintext() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (_key, rec) = keygen(p, "key.txt");
    let a = backup(p, "bk", &rec, &[]);
    let b = backup(p, "bk", &rec, &[]);
    let list = |r: &Value| p.join("bk").join(format!("{}.chunks", r["id"].as_str().unwrap()));
    let (la, lb) = (addresses(&list(&a)), addresses(&list(&b)));
    // The secret's chunk (and coffer's own entries) differ between the
    // runs; the files' chunks are shared.
    let shared = la.intersection(&lb).count();
    assert!(shared >= 3, "file chunks are shared: {shared}");
    assert!(
        la.len() - shared >= 4,
        "secret and metadata chunks are per snapshot: {} of {}",
        la.len() - shared,
        la.len()
    );
    // Same again with the secret alone: nothing in common.
    let out = |_: ()| {
        coffer(p)
            .args([
                "--json",
                "backup",
                "--format",
                "chunked",
                "--source",
                "env:secrets/.env#*",
            ])
            .args(["--sink", "sec", "--recipient", &rec])
            .output()
            .unwrap()
    };
    let (s1, s2) = (json_ok(&out(())), json_ok(&out(())));
    let sl = |r: &Value| {
        addresses(
            &p.join("sec")
                .join(format!("{}.chunks", r["id"].as_str().unwrap())),
        )
    };
    // Only the tar's end-of-archive blocks (zeros) are shared.
    let common = sl(&s1).intersection(&sl(&s2)).count();
    assert!(
        common <= 1,
        "a secret's chunks are never shared: {common} in common"
    );
    for f in files_under(&p.join("bk"))
        .iter()
        .chain(files_under(&p.join("sec")).iter())
    {
        let full = if p.join("bk").join(f).exists() {
            p.join("bk").join(f)
        } else {
            p.join("sec").join(f)
        };
        let bytes = fs::read(&full).unwrap();
        assert!(!bytes.windows(7).any(|w| w == b"hunter2"), "{f} holds the secret");
    }
}

/// The manual's block (docs/chunked.md), run by `sh` in `dir` with KEY, SINK and SNAPSHOT.
fn readme_block(dir: &Path, key: &Path, sink: &Path, id: &str) -> std::process::Output {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/chunked.md")).unwrap();
    let begin = "<!-- restore-chunked-without-coffer:begin -->";
    let end = "<!-- restore-chunked-without-coffer:end -->";
    let block = &readme[readme.find(begin).unwrap() + begin.len()..readme.find(end).unwrap()];
    let script = block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("one sh block");
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("KEY", key)
        .env("SINK", sink)
        .env("SNAPSHOT", id)
        .output()
        .unwrap()
}

#[test]
fn the_readme_block_restores_a_chunked_snapshot_with_standard_tools() {
    for tool in ["age", "zstd", "tar", "sha256sum"] {
        if !require_tool(tool) {
            return;
        }
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    backup(p, "bk", &rec, &[]);
    fs::write(p.join("svc/conf/a.yaml"), "a: 2\n").unwrap();
    let second = backup(p, "bk", &rec, &[]);
    let id = second["id"].as_str().unwrap();
    fs::create_dir(p.join("x")).unwrap();
    let out = readme_block(&p.join("x"), &key, &p.join("bk"), id);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all files match SHA256SUMS"));
    same_file(&p.join("svc/blob.bin"), &p.join("x/files/svc/blob.bin"));
    same_file(&p.join("svc/conf/a.yaml"), &p.join("x/files/svc/conf/a.yaml"));
    let env = fs::read_to_string(p.join("x/secrets/env/.env")).unwrap();
    assert!(env.contains("APP_SECRET=hunter2-chunked"));

    // A flipped byte in a pack stops the block before anything is trusted.
    let pack = pack_files(&p.join("bk"))
        .into_iter()
        .max_by_key(|f| fs::metadata(f).unwrap().len())
        .unwrap();
    flip(&pack, 5000);
    fs::create_dir(p.join("y")).unwrap();
    let out = readme_block(&p.join("y"), &key, &p.join("bk"), id);
    assert!(!out.status.success(), "a damaged pack must fail the block");
}

fn flip(file: &Path, at: usize) {
    let mut b = fs::read(file).unwrap();
    b[at] ^= 0x40;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(file, b).unwrap();
}

#[test]
fn a_damaged_pack_fails_verify_and_restore_of_the_snapshots_using_it_only() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    let a = backup(p, "bk", &rec, &[]);
    let before: HashSet<PathBuf> = pack_files(&p.join("bk")).into_iter().collect();
    // New content (noise() is deterministic: salted), in packs of its own:
    // one of file data, one of small chunks.
    let salted = |n: usize, salt: u8| -> Vec<u8> { noise(n).into_iter().map(|b| b ^ salt).collect() };
    fs::write(p.join("svc/other.bin"), salted(2 << 20, 1)).unwrap();
    fs::write(p.join("svc/blob.bin"), salted(1 << 20, 2)).unwrap();
    let b = backup(p, "bk", &rec, &[]);
    let fresh: Vec<PathBuf> = pack_files(&p.join("bk"))
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(fresh.len(), 2, "{fresh:?}");
    let data_pack = fresh
        .iter()
        .max_by_key(|f| fs::metadata(f).unwrap().len())
        .unwrap();
    flip(data_pack, 1000);
    let pack_name = data_pack.file_name().unwrap().to_string_lossy().into_owned();

    let out = coffer(p)
        .args(["--json", "verify", "--all", "--sink", "bk"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v[0]["results"]
        .as_array()
        .unwrap_or_else(|| v.as_array().unwrap());
    let failed: Vec<&Value> = results.iter().filter(|r| r["ok"] == false).collect();
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["id"], b["id"]);
    assert!(failed[0].to_string().contains(&pack_name), "names the pack: {v}");

    // The unaffected snapshot restores; the damaged one writes nothing.
    restore(p, "bk", &key, a["id"].as_str().unwrap(), "ok");
    let out = coffer(p)
        .args(["restore", b["id"].as_str().unwrap(), "--sink", "bk", "--identity"])
        .arg(&key)
        .args(["--target", "bad"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!p.join("bad").exists() || files_under(&p.join("bad")).is_empty());
}

#[test]
fn a_write_only_host_backs_up_and_prunes_and_a_host_with_the_identity_joins() {
    let d = tempfile::tempdir().unwrap();
    let (vault, host_a, host_b) = (d.path().join("vault"), d.path().join("a"), d.path().join("b"));
    for h in [&vault, &host_a, &host_b] {
        fs::create_dir_all(h).unwrap();
    }
    // The identity lives in the vault only; host A holds the recipient.
    let (key, rec) = keygen(&vault, "key.txt");
    tree(&host_a);
    let sink = d.path().join("sink");
    let sink_s = sink.to_str().unwrap();
    let first = backup(&host_a, sink_s, &rec, &["--time", "2026-12-01T00:00:00Z"]);
    // A file that lives one day: its chunks go into a pack of that day's.
    let tmp: Vec<u8> = noise(2 << 20).into_iter().map(|b| b ^ 0x5a).collect();
    fs::write(host_a.join("svc/tmp.bin"), tmp).unwrap();
    let second = backup(&host_a, sink_s, &rec, &["--time", "2026-12-02T00:00:00Z"]);
    fs::remove_file(host_a.join("svc/tmp.bin")).unwrap();
    // (noise() is deterministic: other bytes than tmp.bin's.)
    let mut blob = noise(2 << 20);
    blob.reverse();
    fs::write(host_a.join("svc/blob.bin"), blob).unwrap();
    backup(&host_a, sink_s, &rec, &["--time", "2026-12-03T00:00:00Z"]);
    assert!(files_under(&host_a).iter().all(|f| !f.contains("key.txt")));
    let packs_before = pack_files(&sink).len();

    // Prune on host A, no key anywhere: the first is pinned and the last
    // kept; the second snapshot and its pack go.
    coffer(&host_a)
        .args(["pin", first["id"].as_str().unwrap(), "--sink", sink_s])
        .assert()
        .success();
    let out = coffer(&host_a)
        .args(["--json", "prune", "--keep-last", "1", "--sink", sink_s])
        .output()
        .unwrap();
    let v = json_ok(&out);
    let swept = &v[0]["chunks"];
    let removed = swept["removed_packs"].as_u64().unwrap() as usize;
    assert!(
        removed >= 1 && swept["removed_bytes"].as_u64().unwrap() > 2 << 20,
        "{v}"
    );
    assert_eq!(pack_files(&sink).len(), packs_before - removed);
    assert!(
        !sink
            .join(format!("{}.chunks", second["id"].as_str().unwrap()))
            .exists()
    );
    let out = coffer(&host_a)
        .args(["verify", "--all", "--sink", sink_s])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Host B has no dedup key: refused, with the way to get it.
    tree(&host_b);
    fs::copy(host_a.join("svc/blob.bin"), host_b.join("svc/blob.bin")).unwrap();
    let out = coffer(&host_b)
        .args([
            "backup",
            "--format",
            "chunked",
            "--source",
            "file:svc",
            "--sink",
            sink_s,
            "--recipient",
            &rec,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("coffer dedup-key"), "{err}");
    // From the vault, with the identity: the key, then host B dedups
    // against host A's chunks.
    let out = coffer(&vault)
        .args(["dedup-key", "--sink", sink_s, "--identity"])
        .arg(&key)
        .args(["-o", "dedup.key"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = backup(
        &host_b,
        sink_s,
        &rec,
        &["--dedup-key", vault.join("dedup.key").to_str().unwrap()],
    );
    let (_, _, new_bytes) = chunks(&b);
    assert!(new_bytes < 200 << 10, "host B stores only what A did not: {b}");
    restore(&vault, sink_s, &key, b["id"].as_str().unwrap(), "restored");
    same_file(&host_b.join("svc/blob.bin"), &vault.join("restored/blob.bin"));
}

#[test]
fn bundles_and_chunked_snapshots_share_a_sink_and_copy_keeps_both() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    let out = coffer(p)
        .args([
            "--json",
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .output()
        .unwrap();
    let bundle = json_ok(&out);
    assert!(bundle.get("chunks").is_none());
    let chunked = backup(p, "bk", &rec, &[]);
    let out = coffer(p)
        .args(["--json", "copy", "--all", "--from", "bk", "--to", "copy"])
        .output()
        .unwrap();
    json_ok(&out);
    let out = coffer(p)
        .args(["verify", "--all", "--sink", "copy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The dedup key travelled too.
    assert_eq!(files_under(&p.join("copy/keys")).len(), 1);
    for (r, target) in [(&bundle, "from-bundle"), (&chunked, "from-chunked")] {
        restore(p, "copy", &key, r["id"].as_str().unwrap(), target);
        same_file(&p.join("svc/data.jsonl"), &p.join(target).join("data.jsonl"));
    }
    // Copying again sends nothing.
    let out = coffer(p)
        .args(["--json", "copy", "--all", "--from", "bk", "--to", "copy"])
        .output()
        .unwrap();
    let v = json_ok(&out);
    assert!(!v.to_string().contains("\"copied\""), "{v}");
}

/// A copy sends the chunks the target lacks, whatever packs hold them:
/// after a run fanned out to two chunked sinks (each its own packs of the
/// same ciphertext), a later run to one of them is copied to the other by
/// its few new chunks, into packs of the target's own; the list and its
/// signature travel unchanged, and the copy verifies and restores there,
/// with coffer and with the manual's standard-tools block.
#[test]
fn a_copy_sends_only_the_chunks_the_target_lacks_whatever_packs_hold_them() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    backup(p, "a", &rec, &["--sink", "b"]);
    let (a_packs, b_packs): (HashSet<String>, HashSet<String>) = (names(&p.join("a")), names(&p.join("b")));
    assert!(
        a_packs.is_disjoint(&b_packs),
        "fan-out gives each sink packs of its own"
    );
    let mut data = fs::OpenOptions::new()
        .append(true)
        .open(p.join("svc/data.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut data, &noise(64 << 10)).unwrap();
    let second = backup(p, "a", &rec, &[]);
    let id = second["id"].as_str().unwrap();
    let (_, _, new_bytes) = chunks(&second);
    let stored = second["chunks"]["stored_bytes"].as_u64().unwrap();
    assert!(stored > 3 << 20, "{second}");

    let out = coffer(p)
        .args(["--json", "copy", id, "--from", "a", "--to", "b"])
        .output()
        .unwrap();
    let v = json_ok(&out);
    let sent = v["snapshots"][0]["bytes"].as_u64().unwrap();
    assert!(
        sent <= new_bytes + (64 << 10) && sent * 10 < stored,
        "sent {sent} of a {stored}-byte snapshot that added {new_bytes}: {v}"
    );
    // Only the packs holding the second run's new chunks travel: none of
    // the first run's, which the target holds under other names.
    let added: HashSet<String> = names(&p.join("b")).difference(&b_packs).cloned().collect();
    let new_on_a: HashSet<String> = names(&p.join("a")).difference(&a_packs).cloned().collect();
    assert_eq!(added, new_on_a);
    assert_eq!(
        fs::read(p.join("a").join(format!("{id}.chunks"))).unwrap(),
        fs::read(p.join("b").join(format!("{id}.chunks"))).unwrap(),
        "the signed list names no pack: copied unchanged"
    );
    whole_on(p, "b", &key, id, "data.jsonl", "out");

    // A snapshot that uses a small part of a pack (the large file beside
    // its data was removed) gets just those chunks, in a pack of the
    // target's own, not the pack whole.
    fs::remove_file(p.join("svc/blob.bin")).unwrap();
    let third = backup(p, "a", &rec, &[]);
    let id = third["id"].as_str().unwrap();
    let out = coffer(p)
        .args(["--json", "copy", id, "--from", "a", "--to", "c"])
        .output()
        .unwrap();
    let v = json_ok(&out);
    let sent = v["snapshots"][0]["bytes"].as_u64().unwrap();
    let used = third["chunks"]["stored_bytes"].as_u64().unwrap();
    let list = v["snapshots"][0]["size"].as_u64().unwrap();
    // A pack the snapshot uses at least half of travels whole (at most
    // twice what it uses); the 3 MiB pack of the removed file does not.
    assert!(
        sent <= 2 * used + list && sent < 1 << 20,
        "sent {sent} for a snapshot using {used}: {v}"
    );
    let own: HashSet<String> = names(&p.join("c"))
        .difference(&names(&p.join("a")))
        .cloned()
        .collect();
    assert!(!own.is_empty(), "a pack of the target's own");
    whole_on(p, "c", &key, id, "data.jsonl", "out-c");
    assert!(!p.join("out-c/blob.bin").exists());
}

/// A snapshot whose list holds its locations inline (as lists did before
/// they moved to `<id>.locs`) is still verified, restored, copied (whole
/// packs) and restored by the manual's block.
#[test]
fn a_list_with_inline_locations_from_before_still_reads_copies_and_restores() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    let r = backup(p, "a", &rec, &[]);
    let id = r["id"].as_str().unwrap();
    // Rewrite it in the old form: five fields a line, no locations file,
    // the index naming the new list's size and SHA-256 (unsigned).
    let (list_path, locs_path) = (p.join(format!("a/{id}.chunks")), p.join(format!("a/{id}.locs")));
    let (list, locs) = (list_text(&list_path), list_text(&locs_path));
    assert_eq!(list.lines().count(), locs.lines().count());
    let inline: String = list
        .lines()
        .zip(locs.lines())
        .map(|(l, at)| {
            let f: Vec<&str> = l.split(' ').collect();
            let [address, length, sum] = f[..] else {
                panic!("a list line is `address length sha256`: {l}")
            };
            format!("{address} {at} {length} {sum}\n")
        })
        .collect();
    let object = zstd_encode(inline.as_bytes());
    fs::write(&list_path, &object).unwrap();
    fs::remove_file(&locs_path).unwrap();
    let index_path = p.join(format!("a/{id}.json"));
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    index["object"]["size"] = object.len().into();
    index["object"]["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&object)).into();
    fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();

    let out = coffer(p)
        .args(["verify", "--all", "--sink", "a"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    restore(p, "a", &key, id, "out-a");
    same_file(&p.join("svc/blob.bin"), &p.join("out-a/blob.bin"));
    let out = coffer(p)
        .args(["--json", "copy", id, "--from", "a", "--to", "b"])
        .output()
        .unwrap();
    json_ok(&out);
    assert_eq!(names(&p.join("b")), names(&p.join("a")), "whole packs, by name");
    assert!(
        !p.join(format!("b/{id}.locs")).exists(),
        "its locations stay inline"
    );
    whole_on(p, "b", &key, id, "blob.bin", "out-b");
}

fn zstd_encode(b: &[u8]) -> Vec<u8> {
    let out = Command::new("zstd")
        .args(["-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Prune rewrites, without a key, a pack the kept snapshots use less than
/// half of: a large file removed from the tree leaves its pack mostly
/// dead once the snapshot holding it is pruned; the live chunks move to a
/// new pack, the kept snapshot's locations follow, the old pack goes. A
/// dry run reports it and changes nothing; the snapshot still verifies
/// and restores, with coffer and with the manual's block.
#[test]
fn prune_rewrites_packs_kept_snapshots_use_less_than_half_of() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    // A second large file, kept: its chunks share the removed one's pack.
    let kept: Vec<u8> = noise(1 << 20).into_iter().rev().collect();
    fs::write(p.join("svc/kept.bin"), &kept).unwrap();
    backup(p, "a", &rec, &[]);
    fs::remove_file(p.join("svc/blob.bin")).unwrap();
    let second = backup(p, "a", &rec, &[]);
    let id = second["id"].as_str().unwrap();
    let bytes = |sink: &Path| -> u64 {
        pack_files(sink)
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum()
    };
    let (before, packs) = (bytes(&p.join("a")), names(&p.join("a")));
    let prune = |extra: &[&str]| {
        let out = coffer(p)
            .args(["--json", "prune", "--keep-last", "1", "--sink", "a"])
            .args(extra)
            .output()
            .unwrap();
        json_ok(&out)[0]["chunks"].clone()
    };
    // kill -9 at several moments of the prune (its rewrite included), each
    // on a copy of the sink: every snapshot stays whole, and a later prune
    // finishes the job.
    for ms in [10u64, 30, 60, 120, 250] {
        let k = format!("k{ms}");
        let cp = Command::new("cp")
            .arg("-a")
            .arg(p.join("a"))
            .arg(p.join(&k))
            .status()
            .unwrap();
        assert!(cp.success());
        kill_after(p, &["-q", "prune", "--keep-last", "1", "--sink", &k], ms);
        coffer(p).args(["unlock", "--sink", &k]).assert().success();
        for _ in 0..2 {
            let out = coffer(p)
                .args(["verify", "--all", "--sink", &k])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "prune killed at {ms} ms: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            coffer(p)
                .args(["-q", "prune", "--keep-last", "1", "--sink", &k])
                .assert()
                .success();
        }
        restore(p, &k, &key, id, &format!("out-{k}"));
        same_file(&p.join("svc/kept.bin"), &p.join(format!("out-{k}/kept.bin")));
    }
    let planned = prune(&["--dry-run"]);
    assert!(planned["repacked_packs"].as_u64().unwrap() >= 1, "{planned}");
    assert_eq!(names(&p.join("a")), packs, "a dry run changes nothing");
    let done = prune(&[]);
    assert!(done["repacked_packs"].as_u64().unwrap() >= 1, "{done}");
    assert!(done["repacked_bytes"].as_u64().unwrap() > 2 << 20, "{done}");
    let after = bytes(&p.join("a"));
    assert!(after + (2 << 20) < before, "{before} → {after}");
    assert!(
        !names(&p.join("a")).is_subset(&packs),
        "a new pack holds the live chunks"
    );
    whole_on(p, "a", &key, id, "kept.bin", "out");
    same_file(&p.join("svc/data.jsonl"), &p.join("out/data.jsonl"));
    assert_eq!(prune(&[])["repacked_packs"], 0, "nothing left to rewrite");
}

/// Snapshot `id` on `sink` verifies (every snapshot there), restores
/// with coffer into `tag`, and with the manual's block into `tag-sh`,
/// `file` of the tree each time as it is now.
fn whole_on(p: &Path, sink: &str, key: &Path, id: &str, file: &str, tag: &str) {
    let out = coffer(p)
        .args(["verify", "--all", "--sink", sink])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    restore(p, sink, key, id, tag);
    same_file(&p.join("svc").join(file), &p.join(tag).join(file));
    if require_tool("age") && require_tool("zstd") {
        let dir = p.join(format!("{tag}-sh"));
        fs::create_dir(&dir).unwrap();
        let out = readme_block(&dir, key, &p.join(sink), id);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        same_file(&p.join("svc").join(file), &dir.join("files/svc").join(file));
    }
}

/// The names of a sink directory's packs.
fn names(sink: &Path) -> HashSet<String> {
    pack_files(sink)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A chunked backup of a large tree killed with `kill -9` at several
/// moments: never a snapshot that references a missing chunk; `verify
/// --all` passes, the next backup works and prune sweeps the orphans.
#[test]
fn killed_chunked_backups_leave_nothing_that_looks_complete() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    for i in 0..12 {
        fs::write(p.join(format!("svc/f{i}.bin")), noise(4 << 20)).unwrap();
    }
    let (key, rec) = keygen(p, "key.txt");
    // The sink exists before the killed runs.
    coffer(p).args(["sink", "init", "bk"]).assert().success();
    for delay in [150u64, 400, 900, 1500] {
        kill_after(p, &chunked_backup_args(&rec), delay);
        let out = coffer(p)
            .args(["verify", "--all", "--sink", "bk"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "after a kill at {delay} ms: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let started = Instant::now();
    let done = backup_files(p, &rec);
    assert!(started.elapsed() < Duration::from_secs(120));
    let out = coffer(p).args(["unlock", "--sink", "bk"]).output().unwrap();
    assert!(out.status.success());
    let out = coffer(p)
        .args(["--json", "prune", "--keep-last", "1", "--sink", "bk"])
        .output()
        .unwrap();
    let v = json_ok(&out);
    // What the runs share (the svc/ directory entry, written in the same
    // second) keeps only a small pack alive.
    assert!(
        v[0]["chunks"]["unused_bytes"].as_u64().unwrap() < 64 << 10,
        "only live packs left: {v}"
    );
    // The killed runs' packs are gone: every pack left is the kept
    // snapshot's.
    let list = list_text(
        &p.join("bk")
            .join(format!("{}.chunks", done["id"].as_str().unwrap())),
    );
    let used: HashSet<&str> = list.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    let left: HashSet<String> = pack_files(&p.join("bk"))
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(left.len() <= used.len() + 1, "{left:?}");
    let out = coffer(p)
        .args(["verify", "--all", "--sink", "bk"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    restore(p, "bk", &key, done["id"].as_str().unwrap(), "out");
    same_file(&p.join("svc/f7.bin"), &p.join("out/f7.bin"));
}

fn backup_files(p: &Path, rec: &str) -> Value {
    let out = coffer(p)
        .args([
            "--json",
            "backup",
            "--format",
            "chunked",
            "--source",
            "file:svc",
            "--sink",
            "bk",
            "--recipient",
            rec,
        ])
        .output()
        .unwrap();
    json_ok(&out)
}

/// Sets a file's mtime to `secs` ago (its ctime stays now).
fn age_file(path: &Path, secs: u64) {
    let t = std::time::SystemTime::now() - Duration::from_secs(secs);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn reused(report: &Value) -> u64 {
    report["reused_bytes"].as_u64().unwrap()
}

#[test]
fn unchanged_files_are_not_read_again_and_a_lost_or_wrong_cache_only_costs_reading() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    for f in ["svc/blob.bin", "svc/data.jsonl"] {
        age_file(&p.join(f), 60);
    }
    // The change times of the files are "now": wait for them to leave the
    // racy second before the first run.
    std::thread::sleep(Duration::from_millis(1100));
    let first = backup(p, "bk", &rec, &[]);
    assert_eq!(reused(&first), 0);
    let big = fs::metadata(p.join("svc/blob.bin")).unwrap().len()
        + fs::metadata(p.join("svc/data.jsonl")).unwrap().len();
    let second = backup(p, "bk", &rec, &[]);
    assert_eq!(
        reused(&second),
        big,
        "both large files come from the cache: {second}"
    );
    assert_eq!(chunks(&second).0, chunks(&first).0);

    // A file written just before a run is read again by the next one (it
    // could change again within the same second).
    fs::write(
        p.join("svc/data.jsonl"),
        fs::read(p.join("svc/data.jsonl")).unwrap(),
    )
    .unwrap();
    backup(p, "bk", &rec, &[]);
    let fourth = backup(p, "bk", &rec, &[]);
    let blob = fs::metadata(p.join("svc/blob.bin")).unwrap().len();
    assert_eq!(reused(&fourth), blob, "the racy file was read: {fourth}");

    // A corrupt cache: everything is read, the snapshot is whole.
    let cache = files_under(&p.join(".cache/coffer"));
    assert_eq!(cache.len(), 1, "{cache:?}");
    fs::write(p.join(".cache/coffer").join(&cache[0]), b"{not json").unwrap();
    let fifth = backup(p, "bk", &rec, &[]);
    assert_eq!(reused(&fifth), 0);
    // A cache that believes chunks are stored which the sink lost: they
    // are read and stored again.
    let sixth = backup(p, "bk", &rec, &[]);
    assert!(reused(&sixth) > 0);
    for pack in pack_files(&p.join("bk")) {
        fs::remove_file(pack).unwrap();
    }
    let seventh = backup(p, "bk", &rec, &[]);
    assert_eq!(reused(&seventh), 0, "{seventh}");
    assert_eq!(
        chunks(&seventh).1,
        chunks(&seventh).0,
        "every chunk stored again: {seventh}"
    );
    let out = coffer(p)
        .args(["verify", seventh["id"].as_str().unwrap(), "--sink", "bk"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    restore(p, "bk", &key, seventh["id"].as_str().unwrap(), "out");
    same_file(&p.join("svc/blob.bin"), &p.join("out/blob.bin"));
    same_file(&p.join("svc/data.jsonl"), &p.join("out/data.jsonl"));
    // And a snapshot made from the cache restores byte for byte.
    restore(p, "bk", &key, "latest", "out-latest");
    let out = coffer(p)
        .args(["verify", "latest", "--deep", "--sink", "bk", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `coffer` with the AWS environment moto accepts.
fn coffer_aws(dir: &Path) -> assert_cmd::Command {
    let mut c = coffer(dir);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    c
}

#[test]
fn chunked_snapshots_round_trip_through_s3_and_sftp_and_a_copy_of_the_prefix_restores_without_coffer() {
    use coffer_e2e::moto_server::MotoServer;
    use coffer_e2e::ssh_server::SshServer;
    for tool in ["age", "zstd", "tar", "sha256sum"] {
        if !require_tool(tool) {
            return;
        }
    }
    let Some(moto) = MotoServer::start() else { return };
    let Some(ssh) = SshServer::start() else { return };
    moto.create_bucket("chunks");
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    let s3 = format!("s3://chunks/svc?endpoint={}&region=us-east-1", moto.endpoint());
    let sftp = ssh.url("chunked");
    let run = |extra: &str| {
        let out = coffer_aws(p)
            .args(["--json", "backup", "--format", "chunked", "--source", "file:svc"])
            .args([
                "--source",
                "env:secrets/.env#APP_*",
                "--sink",
                &s3,
                "--sink",
                &sftp,
                "--recipient",
                &rec,
            ])
            .output()
            .unwrap();
        let v = json_ok(&out);
        assert!(
            v["sinks"].as_array().unwrap().iter().all(|s| s["ok"] == true),
            "{extra}: {v}"
        );
        v
    };
    run("first");
    fs::write(p.join("svc/conf/a.yaml"), "a: 3\n").unwrap();
    let second = run("second");
    let id = second["id"].as_str().unwrap();
    // Each remote sink restores by itself and verifies without a key.
    for (name, sink) in [("s3", &s3), ("sftp", &sftp)] {
        let target = format!("out-{name}");
        let out = coffer_aws(p)
            .args(["restore", id, "--sink", sink, "--identity"])
            .arg(&key)
            .args(["--target", &target])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        same_file(&p.join("svc/blob.bin"), &p.join(&target).join("blob.bin"));
        same_file(&p.join("svc/conf/a.yaml"), &p.join(&target).join("conf/a.yaml"));
        let out = coffer_aws(p)
            .args(["verify", "--all", "--sink", sink])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Packs of several MiB, not an object per chunk.
    let keys = moto.keys("chunks");
    assert!(keys.iter().any(|k| k.starts_with("svc/data/")), "{keys:?}");
    // A copy of the S3 prefix (as `aws s3 cp --recursive` makes) restores
    // with the README's block alone.
    let copy = p.join("s3-copy");
    for k in &keys {
        let rel = k.strip_prefix("svc/").unwrap();
        let dest = copy.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(dest, moto.get_object("chunks", k)).unwrap();
    }
    fs::create_dir(p.join("x")).unwrap();
    let out = readme_block(&p.join("x"), &key, &copy, id);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    same_file(&p.join("svc/blob.bin"), &p.join("x/files/svc/blob.bin"));
}

/// A chunked backup and a prune race on one sink, as two hosts would:
/// whichever takes its lock first, the other refuses, and the sink never
/// holds a snapshot whose chunks the sweep removed.
#[test]
fn a_backup_racing_a_prune_never_references_a_swept_chunk() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    let (key, rec) = keygen(p, "key.txt");
    coffer(p).args(["sink", "init", "bk"]).assert().success();
    for round in 0..4u64 {
        // New content each round, so the prune has packs to sweep.
        for i in 0..3u8 {
            let salt = round as u8 * 3 + i + 1;
            let data: Vec<u8> = noise(3 << 20).into_iter().map(|b| b ^ salt).collect();
            fs::write(p.join(format!("svc/r{i}.bin")), data).unwrap();
        }
        let backup = spawn_coffer(p, &chunked_backup_args(&rec), Stdio::piped());
        std::thread::sleep(Duration::from_millis(round * 60));
        let prune = coffer(p)
            .args(["prune", "--keep-last", "1", "--sink", "bk"])
            .output()
            .unwrap();
        let backed = backup.wait_with_output().unwrap();
        // At most one of them may have been refused, for the lock.
        for (what, out) in [("backup", &backed), ("prune", &prune)] {
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("lock") || err.contains("prune") || err.contains("running"),
                    "{what}: {err}"
                );
            }
        }
        assert!(
            backed.status.success() || prune.status.success(),
            "round {round}: neither ran"
        );
        let out = coffer(p)
            .args(["verify", "--all", "--sink", "bk"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    restore(p, "bk", &key, "latest", "out");
}

/// One run writes a bundle to one sink and chunks to another (the sinks'
/// `format`), from the same tar stream; both restore the same files.
#[test]
fn one_run_fans_out_a_bundle_and_chunks() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n\n[source.svc]\nkind = \"file\"\npath = \"svc\"\n\n\
             [sink.plain]\nkind = \"local\"\npath = \"plain\"\ncreate = true\n\n\
             [sink.dedup]\nkind = \"local\"\npath = \"dedup\"\ncreate = true\nformat = \"chunked\"\ndedup-key = \"keys/dedup.key\"\n\n\
             [job.svc]\nsources = [\"svc\"]\nsinks = [\"plain\", \"dedup\"]\n"
        ),
    )
    .unwrap();
    for _ in 0..2 {
        let out = coffer(p)
            .args(["--json", "-c", "coffer.toml", "backup", "svc"])
            .output()
            .unwrap();
        let v = json_ok(&out);
        assert_eq!(
            v["reused_bytes"], 0,
            "a run that writes a bundle reads every file"
        );
    }
    assert!(p.join("keys/dedup.key").exists(), "the sink's dedup-key file");
    assert_eq!(
        coffer_e2e::files_under(&p.join("plain"))
            .iter()
            .filter(|f| f.ends_with(".coffer"))
            .count(),
        2
    );
    assert_eq!(
        coffer_e2e::files_under(&p.join("dedup"))
            .iter()
            .filter(|f| f.ends_with(".chunks"))
            .count(),
        2
    );
    for sink in ["plain", "dedup"] {
        let out = coffer(p)
            .args([
                "-c",
                "coffer.toml",
                "restore",
                "latest",
                "--sink",
                sink,
                "--identity",
            ])
            .arg(&key)
            .args(["--target", &format!("out-{sink}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sink}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        same_file(&p.join("svc/blob.bin"), &p.join(format!("out-{sink}/blob.bin")));
    }
}

/// With --trusted-signer, only trusted snapshots count toward retention:
/// junk snapshots from a compromised host (unsigned, or signed by its own
/// key) cannot push the good ones out of keep-last, and are not deleted.
#[test]
fn junk_snapshots_cannot_push_trusted_ones_out_of_retention() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (_key, rec) = keygen(p, "key.txt");
    let signer = |name: &str| {
        let out = coffer(p)
            .args(["--json", "keygen", "--signing", "-o", name])
            .output()
            .unwrap();
        json_ok(&out)["signer"].as_str().unwrap().to_string()
    };
    let good = signer("good.key");
    signer("rogue.key");
    let day = |d: u32| format!("2026-11-{d:02}T00:00:00Z");
    let mut trusted = Vec::new();
    for d in 1..=2 {
        let r = backup(p, "bk", &rec, &["--signing-key", "good.key", "--time", &day(d)]);
        trusted.push(r["id"].as_str().unwrap().to_string());
    }
    backup(p, "bk", &rec, &["--time", &day(3)]);
    backup(p, "bk", &rec, &["--signing-key", "rogue.key", "--time", &day(4)]);
    let out = coffer(p)
        .args([
            "--json",
            "prune",
            "--keep-last",
            "2",
            "--sink",
            "bk",
            "--trusted-signer",
            &good,
        ])
        .output()
        .unwrap();
    let v = json_ok(&out);
    let rows = v[0]["snapshots"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["deleted"] == false), "{v}");
    let not_counted = rows
        .iter()
        .filter(|r| r["reasons"].to_string().contains("not counted"))
        .count();
    assert_eq!(not_counted, 2, "{v}");
    for id in &trusted {
        assert!(p.join("bk").join(format!("{id}.json")).exists());
    }
    // Without it, keep-last 2 keeps the junk and deletes the good ones.
    let out = coffer(p)
        .args(["--json", "prune", "--keep-last", "2", "--sink", "bk", "--dry-run"])
        .output()
        .unwrap();
    let v = json_ok(&out);
    let doomed: Vec<String> = v[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["keep"] == false)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(doomed.len(), 2);
    assert!(doomed.iter().all(|id| trusted.contains(id)), "{v}");
}

/// `coffer ARGS` started in `p` with the environment of
/// [`coffer_e2e::coffer`] (this test's own config and cache folders).
fn spawn_coffer(p: &Path, args: &[&str], stderr: Stdio) -> std::process::Child {
    coffer_e2e::spawn_coffer(p, args, Stdio::null(), stderr)
}

/// The argv of a quiet chunked backup of `svc` to `bk`.
fn chunked_backup_args(rec: &str) -> [&str; 10] {
    [
        "-q",
        "backup",
        "--format",
        "chunked",
        "--source",
        "file:svc",
        "--sink",
        "bk",
        "--recipient",
        rec,
    ]
}

/// Runs `coffer ARGS` in `p` and kills it with SIGKILL after `ms`.
fn kill_after(p: &Path, args: &[&str], ms: u64) {
    let mut child = spawn_coffer(p, args, Stdio::null());
    std::thread::sleep(Duration::from_millis(ms));
    let _ = child.kill();
    let _ = child.wait();
}

/// kill -9 during a chunked copy and during a prune's sweep, at several
/// moments: the target never shows a snapshot with a missing chunk, a
/// later copy completes what was left, and a later prune finishes.
#[test]
fn killed_copies_and_prunes_of_chunked_snapshots_leave_every_snapshot_whole() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    let (key, rec) = keygen(p, "key.txt");
    // Five snapshots of different content: several packs each.
    for s in 0..5u8 {
        for i in 0..3u8 {
            let data: Vec<u8> = noise(4 << 20).into_iter().map(|b| b ^ (s * 3 + i + 1)).collect();
            fs::write(p.join(format!("svc/f{i}.bin")), data).unwrap();
        }
        backup_files(p, &rec);
    }
    for ms in [30u64, 90, 200, 400] {
        kill_after(p, &["-q", "copy", "--all", "--from", "bk", "--to", "copy"], ms);
        if p.join("copy").exists() {
            let out = coffer(p)
                .args(["verify", "--all", "--sink", "copy"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "copy killed at {ms} ms: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    let out = coffer(p)
        .args(["copy", "--all", "--from", "bk", "--to", "copy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = coffer(p)
        .args(["--json", "list", "--sink", "copy"])
        .output()
        .unwrap();
    assert_eq!(json_ok(&out)[0]["snapshots"].as_array().unwrap().len(), 5);

    for ms in [20u64, 60, 150, 300] {
        kill_after(p, &["-q", "prune", "--keep-last", "1", "--sink", "copy"], ms);
        coffer(p).args(["unlock", "--sink", "copy"]).assert().success();
        let out = coffer(p)
            .args(["verify", "--all", "--sink", "copy"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prune killed at {ms} ms: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = coffer(p)
        .args(["--json", "prune", "--keep-last", "1", "--sink", "copy"])
        .output()
        .unwrap();
    let v = json_ok(&out);
    // Chunks the snapshots share (here the tar headers of files rewritten
    // within one second, identical) keep only small packs alive.
    assert!(v[0]["chunks"]["unused_bytes"].as_u64().unwrap() < 64 << 10, "{v}");
    restore(p, "copy", &key, "latest", "out");
    same_file(&p.join("svc/f2.bin"), &p.join("out/f2.bin"));
}

/// A host that signs reuses only chunks of snapshots its trusted signers
/// signed: an unsigned snapshot another holder of the dedup key uploaded
/// (its list could map common addresses to other ciphertext) is never a
/// source of chunks.
#[test]
fn chunks_are_reused_only_from_trusted_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (_key, rec) = keygen(p, "key.txt");
    let out = coffer(p)
        .args(["keygen", "--signing", "-o", "sign.key"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The rogue run: the same dedup key, no signature.
    let rogue = backup(p, "bk", &rec, &["--dedup-key", "shared.key"]);
    assert!(chunks(&rogue).2 > 3 << 20);
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\nsigning-key = \"sign.key\"\n\n[source.svc]\nkind = \"file\"\npath = \"svc\"\n\n\
             [sink.bk]\nkind = \"local\"\npath = \"bk\"\nformat = \"chunked\"\ndedup-key = \"shared.key\"\n\n\
             [job.svc]\nsources = [\"svc\"]\nsinks = [\"bk\"]\n"
        ),
    )
    .unwrap();
    let run = || {
        json_ok(
            &coffer(p)
                .args(["--json", "-c", "coffer.toml", "backup", "svc"])
                .output()
                .unwrap(),
        )
    };
    let first = run();
    assert!(
        chunks(&first).2 > 3 << 20,
        "nothing reused from the unsigned snapshot: {first}"
    );
    let second = run();
    assert!(
        chunks(&second).2 < 64 << 10,
        "its own signed snapshot is reused: {second}"
    );
}

/// A file of zeros cuts into identical maximum-size chunks, sealed by two
/// workers at once: the first in the stream is always the one stored.
#[test]
fn repeated_identical_chunks_are_stored_once_and_restore() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/zeros.img"), vec![0u8; 40 << 20]).unwrap();
    fs::write(p.join("svc/twin-a.bin"), noise(200_000)).unwrap();
    fs::write(p.join("svc/twin-b.bin"), noise(200_000)).unwrap();
    let (key, rec) = keygen(p, "key.txt");
    for round in 0..3 {
        let out = coffer(p)
            .args(["--json", "backup", "--format", "chunked", "--source", "file:svc"])
            .args(["--sink", &format!("bk{round}"), "--recipient", &rec])
            .output()
            .unwrap();
        let v = json_ok(&out);
        let (n, new, _) = chunks(&v);
        assert!(new < n, "repeats stored once: {v}");
        restore(p, &format!("bk{round}"), &key, "latest", &format!("out{round}"));
        same_file(&p.join("svc/zeros.img"), &p.join(format!("out{round}/zeros.img")));
        same_file(
            &p.join("svc/twin-b.bin"),
            &p.join(format!("out{round}/twin-b.bin")),
        );
    }
}

/// A drill rehearses the restore of a chunked snapshot like a bundle's.
#[test]
fn a_drill_of_a_chunked_snapshot_passes_and_leaves_its_evidence() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (key, rec) = keygen(p, "key.txt");
    backup(p, "bk", &rec, &[]);
    let out = coffer(p)
        .args(["--json", "drill", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    let v = json_ok(&out);
    assert!(v.to_string().contains("\"passed\":true"), "{v}");
    assert!(
        files_under(&p.join("bk/drills"))
            .iter()
            .any(|f| f.ends_with(".json"))
    );
}

/// A passphrase cannot encrypt chunked snapshots (a second of scrypt per
/// chunk): refused before a dedup key is made or stored anywhere.
#[test]
fn a_passphrase_run_to_a_chunked_sink_is_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let out = coffer(p)
        .env("COFFER_PASSPHRASE", "correct horse")
        .args([
            "backup",
            "--format",
            "chunked",
            "--source",
            "file:svc",
            "--sink",
            "bk",
            "--passphrase",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need recipients"));
    assert!(!p.join(".config/coffer/dedup.key").exists());
    assert!(!p.join("bk/keys").exists());
}

/// `verify --sample` without a key rotates over the packs of chunked
/// snapshots (each one is referenced by most snapshots, so a rotation over
/// snapshots would read the same packs every run): each run checks every
/// chunk list and that every pack is there, and the chunks of its share of
/// the packs; the cycle covers every pack once, and the run that reads a
/// damaged pack fails the snapshots using it.
#[test]
fn a_sampled_verify_rotates_over_the_packs_of_chunked_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    tree(p);
    let (_key, rec) = keygen(p, "key.txt");
    let a = backup(p, "bk", &rec, &[]);
    let before: HashSet<PathBuf> = pack_files(&p.join("bk")).into_iter().collect();
    let salted = |n: usize, salt: u8| -> Vec<u8> { noise(n).into_iter().map(|b| b ^ salt).collect() };
    fs::write(p.join("svc/other.bin"), salted(2 << 20, 1)).unwrap();
    let b = backup(p, "bk", &rec, &[]);
    let packs = pack_files(&p.join("bk"));
    let fresh: Vec<&PathBuf> = packs.iter().filter(|f| !before.contains(*f)).collect();
    assert!(!fresh.is_empty() && packs.len() >= 3, "{packs:?}");
    let sample = |share: &str| {
        let out = coffer(p)
            .args(["--json", "verify", "--sink", "bk", "--sample", share])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v)
    };
    // One pack per run: every run checks both snapshots; the cycle covers
    // every pack once, then starts again.
    let mut covered = Vec::new();
    for _ in 0..packs.len() {
        let (code, v) = sample("1");
        assert_eq!(code, Some(0), "{v}");
        let results = v.as_array().unwrap();
        let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [a["id"].as_str().unwrap(), b["id"].as_str().unwrap()], "{v}");
        let s = &results[0]["sample"];
        assert_eq!(
            (s["unit"].as_str(), s["cycle"].as_u64()),
            (Some("packs"), Some(1)),
            "{v}"
        );
        assert_eq!(s["of"].as_u64(), Some(packs.len() as u64), "{v}");
        covered.push(s["covered"].as_u64().unwrap());
    }
    assert_eq!(covered, (1..=packs.len() as u64).collect::<Vec<_>>());
    let (_, v) = sample("1");
    assert_eq!(v[0]["sample"]["cycle"].as_u64(), Some(2), "{v}");
    // The text says what a sampled run checked of each snapshot.
    let out = coffer(p)
        .args(["verify", "--sink", "bk", "--sample", "1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("ok (chunk list matches the index, every pack is there")
            && said.contains(&format!("of {} packs checked so far", packs.len()))
            && !said.contains("size and SHA-256 match"),
        "{said}"
    );

    // A damaged pack only b uses: the run that reads it fails b alone.
    flip(fresh[0], 1000);
    let mut failures = Vec::new();
    for _ in 0..packs.len() {
        let (code, v) = sample("1");
        let failed: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["ok"] == false)
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        if !failed.is_empty() {
            assert_eq!(code, Some(3), "{v}");
            let name = fresh[0].file_name().unwrap().to_string_lossy().into_owned();
            assert!(v.to_string().contains(&name), "names the pack: {v}");
        }
        failures.extend(failed);
    }
    assert_eq!(
        failures,
        [b["id"].as_str().unwrap()],
        "one run read the damaged pack"
    );

    // A missing pack fails the snapshots using it in every sampled run,
    // whichever packs that run reads.
    fs::remove_file(fresh[0]).unwrap();
    let (code, v) = sample("1");
    assert_eq!(code, Some(3), "{v}");
    let failed: Vec<&Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["id"], b["id"]);
    assert!(failed[0].to_string().contains("missing"), "{v}");
}
