//! The sources of a verified runbook backup: the archive through the
//! `mongodump` source, the other files under the kind and origin of `file`
//! sources, the secret under that of an `env` source.

use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use coffer_core::{
    Area, CaptureContext, Entry, EntryBody, EntrySender, Error, ErrorKind, RestoreOptions, Restorer, Result,
    Source, SourceFactory, SourceInfo, SourceReport, async_trait, config_error, format::unique_source_name,
    human_size,
};
use coffer_source_mongo::MongodumpSource;
use serde_json::json;

use crate::extract::{Extracted, Member};

/// The `KEY=VALUE` lines of a secret file (verbatim, each ending with a
/// newline) and their keys.
fn secret_lines(data: &[u8]) -> (Vec<u8>, Vec<String>) {
    let text = String::from_utf8_lossy(data);
    let (mut out, mut keys) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let t = line.trim_start();
        let t = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
        let Some((k, _)) = t.split_once('=') else { continue };
        let k = k.trim_end();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        if !keys.iter().any(|x| x == k) {
            keys.push(k.to_string());
        }
    }
    (out, keys)
}

/// A member captured from memory (or its encrypted spill) under the
/// kind and origin of a real `file` or `env` source, which restores it.
struct Imported {
    delegate: Arc<dyn Source>,
    area: Area,
    path: String,
    mode: u32,
    mtime: i64,
    body: Mutex<Option<(u64, Box<dyn Read + Send>)>>,
    report: SourceReport,
}

impl std::fmt::Debug for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imported")
            .field("delegate", &self.delegate)
            .field("path", &self.path)
            .finish()
    }
}

#[async_trait]
impl Source for Imported {
    fn info(&self) -> SourceInfo {
        self.delegate.info()
    }

    async fn check(&self) -> Result<()> {
        if self.body.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "an imported member was already read",
            ));
        }
        Ok(())
    }

    async fn capture(&self, _ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        let taken = self.body.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some((size, reader)) = taken else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "an imported member was already read",
            ));
        };
        out.send(Entry {
            area: self.area.clone(),
            path: self.path.clone(),
            mode: self.mode,
            mtime: self.mtime,
            owner: None,
            stat: None,
            body: EntryBody::File { size, reader },
        })
        .await?;
        Ok(self.report.clone())
    }

    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        self.delegate.restore(opts).await
    }
}

/// The sources of a verified backup, in bundle order, and notes.
pub(crate) fn sources(
    file_factory: &dyn SourceFactory,
    extracted: Extracted,
    origin_dir: &Path,
    backup_name: &str,
) -> Result<(Vec<Arc<dyn Source>>, String)> {
    let (archive, files, secrets) = sort_members(extracted.members)?;
    let archive_name = archive.name.clone();
    let mut out: Vec<Arc<dyn Source>> = vec![Arc::new(MongodumpSource::from_archive_reader(
        "mongo",
        origin_dir.join(&archive.name),
        archive.body.reader,
    ))];
    let mut names: Vec<String> = vec!["mongo".into()];
    for m in files {
        let source = imported_file(file_factory, m, &mut names, origin_dir, backup_name)?;
        out.push(Arc::new(source));
    }
    for m in secrets {
        let source = imported_secret(m, &mut names, origin_dir, backup_name)?;
        out.push(Arc::new(source));
    }
    Ok((out, archive_name))
}

/// Splits the members into the mongodump archive (exactly one `.gz`), the
/// other files and the `.secret` files.
fn sort_members(members: Vec<Member>) -> Result<(Member, Vec<Member>, Vec<Member>)> {
    let mut archive: Option<Member> = None;
    let mut files = Vec::new();
    let mut secrets = Vec::new();
    for m in members {
        if m.name.ends_with(".gz") {
            if let Some(first) = &archive {
                return Err(config_error(format!(
                    "the backup holds two gzip files, `{}` and `{}`: which is the mongodump archive?",
                    first.name, m.name
                ))
                .with_hint("the runbook writes one `mongodump --archive --gzip` file per backup"));
            }
            archive = Some(m);
        } else if m.name.ends_with(".secret") {
            secrets.push(m);
        } else {
            files.push(m);
        }
    }
    let Some(archive) = archive else {
        return Err(Error::new(
            ErrorKind::NotFound,
            "the backup holds no mongodump archive (`issuer-directory-*.gz`)",
        )
        .with_hint("is this a runbook backup? it should hold the `mongodump --archive --gzip` file"));
    };
    Ok((archive, files, secrets))
}

/// The source name a file member is imported under, before it is made
/// unique.
fn file_source_base(member_name: &str) -> String {
    match member_name {
        "issuer-directory.yaml" => "config".to_string(),
        "csaf-publishers.json" => "csaf-seeds".to_string(),
        other => other
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect(),
    }
}

/// A file member as a `file` source of its own, under a name not yet in
/// `names` (which it joins).
fn imported_file(
    file_factory: &dyn SourceFactory,
    m: Member,
    names: &mut Vec<String>,
    origin_dir: &Path,
    backup_name: &str,
) -> Result<Imported> {
    let base = file_source_base(&m.name);
    let name = unique_source_name(&base, names);
    names.push(name.clone());
    let origin = json!({ "path": origin_dir.join(&m.name).to_string_lossy(), "is_dir": false });
    let delegate = file_factory.from_origin(&name, &origin)?;
    Ok(Imported {
        delegate,
        area: Area::Files,
        path: m.name.clone(),
        mode: m.mode,
        mtime: m.mtime,
        report: SourceReport {
            position: None,
            summary: format!("1 file, {} (from {backup_name})", human_size(m.body.size)),
            details: json!({ "files": 1, "dirs": 0, "symlinks": 0, "bytes": m.body.size, "skipped": 0,
                             "imported_from": m.name, "sha256": hex::encode(m.body.sha256) }),
        },
        body: Mutex::new(Some((m.body.size, m.body.reader))),
    })
}

/// A secret member's `KEY=VALUE` lines as an `env` source of its own,
/// under a name not yet in `names` (which it joins).
fn imported_secret(
    mut m: Member,
    names: &mut Vec<String>,
    origin_dir: &Path,
    backup_name: &str,
) -> Result<Imported> {
    let mut data = Vec::new();
    m.body
        .reader
        .read_to_end(&mut data)
        .map_err(|e| Error::io("cannot read a buffered member", e))?;
    let (content, keys) = secret_lines(&data);
    if keys.is_empty() {
        return Err(config_error(format!("`{}` holds no KEY=VALUE line", m.name))
            .with_hint("the runbook's secret file is a `grep '^KEY=' .env` line"));
    }
    let name = unique_source_name("secret", names);
    names.push(name.clone());
    let path = origin_dir.join(&m.name);
    let delegate: Arc<dyn Source> = Arc::new(coffer_source_env::EnvSource::new(&name, &path, keys.clone())?);
    Ok(Imported {
        delegate,
        area: Area::Secrets,
        path: m.name.clone(),
        mode: 0o600,
        mtime: m.mtime,
        report: SourceReport {
            position: None,
            summary: format!(
                "{} key{} from {} (from {backup_name})",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" },
                m.name
            ),
            details: json!({ "keys": keys, "file": path.to_string_lossy() }),
        },
        body: Mutex::new(Some((content.len() as u64, Box::new(io::Cursor::new(content))))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_names() {
        use crate::snapshot_time;
        let t = snapshot_time("issuer-directory-20261127T221500Z.gz", "x").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T22:15:00Z");
        let t = snapshot_time("dump.gz", "2026-11-27T221500").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T22:15:00Z");
        assert!(snapshot_time("dump.gz", "backup").is_none());
    }

    #[test]
    fn secret_lines_keep_assignments_only() {
        let (c, k) = secret_lines(b"# c\nISSUER_DIRECTORY_MONGO_CONNECTION_STRING=mongodb://u:p@h/db\n");
        assert_eq!(
            c,
            b"ISSUER_DIRECTORY_MONGO_CONNECTION_STRING=mongodb://u:p@h/db\n"
        );
        assert_eq!(k, ["ISSUER_DIRECTORY_MONGO_CONNECTION_STRING"]);
    }
}
