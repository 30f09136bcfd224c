//! The restore kit `coffer export` leaves on a medium, so that the far
//! side can check and restore with or without coffer:
//!
//! - `RESTORE.txt`: plain steps, and the snapshots on the medium;
//! - `SHA256SUMS`: every file on the medium, `sha256sum -c` compatible
//!   (rewritten after each export and import);
//! - `trusted-signers.txt`: the public keys whose signatures to trust;
//! - `custody.log`: JSON lines, one per export and import (who, what,
//!   when, from where, to where); lines are only ever appended.
//!
//! These work on any [`Sink`], through its put (all-or-nothing).

use coffer_core::{
    Error, ErrorKind, PutOptions, Result, Sink, SinkExt, fsutil, keys::TrustedSigners, ops::Catalog,
    ops::LOCK_PREFIX,
};
use futures::StreamExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{IDENTITY_FILE, MediaIdentity};

/// The plain-text restore instructions.
pub const RESTORE_FILE: &str = "RESTORE.txt";
/// Checksums of every file on the medium.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// Public keys of the trusted signers.
pub const SIGNERS_FILE: &str = "trusted-signers.txt";
/// The append-only custody log.
pub const CUSTODY_FILE: &str = "custody.log";

/// One line of `custody.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyRecord {
    /// `export` or `import`.
    pub event: String,
    /// `user@host` that ran it.
    pub who: String,
    /// When.
    pub at: Timestamp,
    /// Snapshot ids written (export) or received (import).
    pub ids: Vec<String>,
    /// Where the snapshots came from.
    pub from: String,
    /// Where they went.
    pub to: String,
    /// Snapshots refused (import: tampered or truncated), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// The medium's label and id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// coffer version.
    pub coffer_version: String,
}

impl CustodyRecord {
    /// A record of `event` by the current user, now.
    pub fn new(
        event: &str,
        ids: Vec<String>,
        from: String,
        to: String,
        medium: Option<&MediaIdentity>,
    ) -> Self {
        CustodyRecord {
            event: event.into(),
            who: who(),
            at: Timestamp::now(),
            ids,
            from,
            to,
            refused: Vec::new(),
            medium: medium.map(|m| format!("{} {}", m.label, m.media_id)),
            coffer_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// `user@host` of this process.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_from_passwd)
        .unwrap_or_else(|| {
            // SAFETY: getuid never fails.
            format!("uid{}", unsafe { libc::getuid() })
        });
    format!("{user}@{}", coffer_core::format::hostname())
}

fn user_from_passwd() -> Option<String> {
    // SAFETY: getuid never fails.
    let uid = unsafe { libc::getuid() };
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

async fn get_optional(sink: &dyn Sink, key: &str) -> Result<Option<bytes::Bytes>> {
    match sink.get_bytes(key).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Appends `record` to `custody.log`: the existing lines are kept byte for
/// byte and the file is replaced whole (temp + rename), never truncated.
pub async fn append_custody(sink: &dyn Sink, record: &CustodyRecord) -> Result<()> {
    let mut log = get_optional(sink, CUSTODY_FILE)
        .await?
        .map(|b| b.to_vec())
        .unwrap_or_default();
    if !log.is_empty() && !log.ends_with(b"\n") {
        log.push(b'\n');
    }
    serde_json::to_writer(&mut log, record).expect("custody record serializes");
    log.push(b'\n');
    let len = log.len() as u64;
    sink.put_bytes(
        CUSTODY_FILE,
        log.into(),
        PutOptions::default().with_size_hint(len),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.prefix("appending to custody.log"))
}

/// Rewrites `SHA256SUMS` over every file on the sink (but itself, locks
/// and temp files). A snapshot's object is listed with the SHA-256 its
/// index records (verified when it was written); everything else is
/// hashed. Returns the number of files listed.
pub async fn write_sums(sink: &dyn Sink) -> Result<usize> {
    let cat = Catalog::load(sink).await?;
    let known: std::collections::HashMap<&str, &str> = cat
        .snapshots
        .iter()
        .map(|e| (e.index.object.key.as_str(), e.index.object.sha256.as_str()))
        .collect();
    let mut objects = sink.list("").await?;
    objects.retain(|o| {
        o.key != SUMS_FILE
            && !o.key.starts_with(LOCK_PREFIX)
            && !o
                .key
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(fsutil::TEMP_PREFIX))
    });
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let mut text = String::new();
    for o in &objects {
        let sha = match known.get(o.key.as_str()) {
            Some(s) => s.to_string(),
            None => {
                let mut stream = match sink.get(&o.key).await {
                    Ok(s) => s,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let mut h = Sha256::new();
                while let Some(chunk) = stream.next().await {
                    h.update(&chunk?);
                }
                hex::encode(h.finalize())
            }
        };
        if o.key.contains('\n') {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a file name on the medium contains a newline",
            )
            .with_context("key", o.key.escape_debug()));
        }
        text.push_str(&format!("{sha}  {}\n", o.key));
    }
    let len = text.len() as u64;
    sink.put_bytes(SUMS_FILE, text.into(), PutOptions::default().with_size_hint(len))
        .await?;
    Ok(objects.len())
}

/// Updates only the lines of `keys` in `SHA256SUMS` (an import appending
/// to `custody.log`), leaving every other line as it was — so a file
/// damaged since the export still fails `sha256sum -c`.
pub async fn update_sums(sink: &dyn Sink, keys: &[&str]) -> Result<()> {
    let Some(existing) = get_optional(sink, SUMS_FILE).await? else {
        return Ok(());
    };
    let existing = String::from_utf8_lossy(&existing).into_owned();
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|l| {
            !keys
                .iter()
                .any(|k| l.split_once("  ").is_some_and(|(_, name)| name == *k))
        })
        .map(str::to_string)
        .collect();
    for key in keys {
        let Some(bytes) = get_optional(sink, key).await? else {
            continue;
        };
        lines.push(format!("{}  {key}", hex::encode(Sha256::digest(&bytes))));
    }
    lines.sort_by(|a, b| {
        a.split_once("  ")
            .map(|x| x.1)
            .cmp(&b.split_once("  ").map(|x| x.1))
    });
    let mut text = lines.join("\n");
    text.push('\n');
    sink.put_bytes(SUMS_FILE, text.into(), PutOptions::default())
        .await
        .map(|_| ())
}

/// Writes `trusted-signers.txt` (the configured trusted signers; else the
/// signers of the snapshots on the medium, marked as unchecked) and
/// `RESTORE.txt`.
pub async fn write_restore_kit(
    sink: &dyn Sink,
    identity: Option<&MediaIdentity>,
    trusted: &TrustedSigners,
) -> Result<()> {
    let cat = Catalog::load(sink).await?;
    // Keys already on the medium stay: an export run without trusted
    // signers configured must not drop those an earlier export wrote.
    let mut keys: Vec<coffer_core::keys::SignerKey> = Vec::new();
    if let Some(existing) = get_optional(sink, SIGNERS_FILE).await? {
        for line in String::from_utf8_lossy(&existing).lines().map(str::trim) {
            if !line.is_empty()
                && !line.starts_with('#')
                && let Ok(k) = coffer_core::keys::SignerKey::parse(line)
            {
                keys.push(k);
            }
        }
    }
    for k in trusted.keys() {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    let mut signers = String::from(
        "# Public keys whose signatures coffer trusts (coffer --trusted-signer FILE or\n# trusted-signers = [\"FILE\"]). Compare them with a copy you got another way.\n",
    );
    if keys.is_empty() {
        signers.push_str("# No trusted signer was configured at export. The snapshots here are signed by\n# the keys below (unchecked: a forger could sign with their own key):\n");
        let mut seen = Vec::new();
        for e in &cat.snapshots {
            if let coffer_core::keys::SignatureState::Valid(k) = &e.signature
                && !seen.contains(&k.to_text())
            {
                seen.push(k.to_text());
            }
        }
        for k in seen {
            signers.push_str(&format!("# {k}\n"));
        }
    } else {
        for k in &keys {
            signers.push_str(&format!("# {}\n{}\n", k.fingerprint(), k.to_text()));
        }
    }
    sink.put_bytes(SIGNERS_FILE, signers.into(), PutOptions::default())
        .await?;
    let text = restore_text(identity, &cat);
    sink.put_bytes(RESTORE_FILE, text.into(), PutOptions::default())
        .await?;
    Ok(())
}

/// The text of `RESTORE.txt`.
pub fn restore_text(identity: Option<&MediaIdentity>, cat: &Catalog) -> String {
    let mut t = String::new();
    push_restore_header(&mut t, identity);
    push_snapshot_list(&mut t, cat);
    push_files_list(&mut t);
    push_restore_steps(&mut t, cat);
    push_chunked_steps(&mut t, cat);
    t
}

/// Appends the title, the medium and who wrote the kit when.
fn push_restore_header(t: &mut String, identity: Option<&MediaIdentity>) {
    t.push_str("coffer backup medium — how to restore\n=====================================\n\n");
    if let Some(id) = identity {
        t.push_str(&format!(
            "Medium: {} (media id {}), initialized {}.\n",
            id.describe(),
            id.media_id,
            id.created_at
        ));
    }
    t.push_str(&format!(
        "Written by coffer {} on {}.\n\n",
        env!("CARGO_PKG_VERSION"),
        Timestamp::now()
    ));
}

/// Appends the list of snapshots on the medium, one line each.
fn push_snapshot_list(t: &mut String, cat: &Catalog) {
    t.push_str("Snapshots on this medium (newest last):\n\n");
    for e in &cat.snapshots {
        let srcs: Vec<String> = e
            .index
            .sources
            .iter()
            .map(|s| format!("{} ({})", s.name, s.kind))
            .collect();
        t.push_str(&format!(
            "  {}  {}  job {}  {} bytes  {}  encryption {}  sources: {}\n",
            e.index.id,
            e.index.created_at,
            e.index.job,
            e.index.object.size,
            e.index.compression,
            e.index.encryption.mode,
            srcs.join(", ")
        ));
    }
}

/// Appends what each kind of file on the medium is.
fn push_files_list(t: &mut String) {
    t.push_str(&format!(
        r#"
Files:
  ID.coffer            the encrypted bundle: age( zstd|gzip|none( tar ) )
  ID.json              its public index: size, SHA-256, sources, encryption
  ID.sig               the index's Ed25519 signature (signed snapshots)
  SHA256SUMS           checksums of every file on this medium
  trusted-signers.txt  public keys whose signatures to trust
  custody.log          who exported and imported what, when, from where
  {IDENTITY_FILE}    this medium's label and rotation set
"#
    ));
}

/// Appends the numbered steps: check the medium, restore with coffer,
/// restore without it, record custody.
fn push_restore_steps(t: &mut String, cat: &Catalog) {
    // A bundle: chunked snapshots have a section of their own.
    let example = cat
        .snapshots
        .iter()
        .rev()
        .find(|e| e.index.chunks.is_none())
        .or(cat.snapshots.last())
        .map(|e| e.index.id.to_string())
        .unwrap_or_else(|| "ID".into());
    let mongo: Vec<&str> = cat
        .snapshots
        .iter()
        .flat_map(|e| e.index.sources.iter())
        .filter(|s| s.kind.starts_with("mongo"))
        .map(|s| s.name.as_str())
        .collect();
    let mongo_src = mongo.first().copied().unwrap_or("SOURCE");
    t.push_str(&format!(
        r#"
0. First, check the medium (no coffer needed):

     cd /mnt/usb            # where the medium is mounted
     sha256sum -c SHA256SUMS

   Every line must say OK. A FAILED line means that file is damaged:
   use another medium or another snapshot.

1. With coffer (it checks the signature and the SHA-256 before anything):

     coffer import --from media:/mnt/usb --to /srv/backups \
            --trusted-signer /mnt/usb/{SIGNERS_FILE}
     coffer restore latest --sink /srv/backups --identity key.txt \
            --trusted-signer /mnt/usb/{SIGNERS_FILE}
     # passphrase bundles: --passphrase instead of --identity
     # or straight from the medium:
     coffer restore {example} --sink media:/mnt/usb --identity key.txt

2. Without coffer (age, zstd, tar, sha256sum, and mongorestore for MongoDB):

     mkdir /tmp/restore && cd /tmp/restore
     sha256sum /mnt/usb/{example}.coffer   # must equal "sha256" in {example}.json
     age -d -i key.txt /mnt/usb/{example}.coffer | zstd -d | tar x
     #   "compression": "gzip" in the index: use  gzip -d  instead of  zstd -d
     #   "compression": "none":                  leave the middle step out
     #   passphrase bundles: age -d /mnt/usb/{example}.coffer   (asks for it)
     sha256sum -c SHA256SUMS               # every file of the bundle
     # files/<source>/…    config files and directories
     # secrets/<source>/…  secrets (mode 0600)
     # mongo/<source>/…    MongoDB dumps in mongodump's layout, one folder per
     #                     database, one .bson + .metadata.json per collection:
     mongorestore --drop --dir mongo/{mongo_src}
     #   a point-in-time dump has mongo/{mongo_src}/oplog.bson beside the database
     #   folders: replay it too (--dir stays at the level of oplog.bson):
     mongorestore --drop --oplogReplay --dir mongo/{mongo_src}
     # manifest.json: per-source reports (document counts, sizes, hashes)

   The signature (ID.sig) can only be checked with coffer.

3. Record who received the medium: `coffer import` appends to custody.log.
"#
    ));
}

/// Appends how to restore a chunked snapshot without coffer, when the
/// medium holds one (the newest is the example).
fn push_chunked_steps(t: &mut String, cat: &Catalog) {
    if let Some(c) = cat.snapshots.iter().rev().find(|e| e.index.chunks.is_some()) {
        let script: String = coffer_core::chunked::RESTORE_SCRIPT
            .lines()
            .map(|l| format!("     {l}\n"))
            .collect();
        t.push_str(&format!(
            r#"
Chunked snapshots (ID.chunks instead of ID.coffer; their chunks are in the
packs under data/, keys/ holds the dedup key, encrypted): without coffer,
in an empty directory, with sh, age, zstd, tar and sha256sum:

     KEY=key.txt SINK=/mnt/usb SNAPSHOT={id}; export KEY SINK SNAPSHOT
{script}
   The result is the same tree as a bundle's (step 2 from sha256sum -c on).
"#,
            id = c.index.id
        ));
    }
}
