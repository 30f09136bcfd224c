//! `coffer import-runbook`: turns a backup made by the manual Issuer
//! Directory runbook into a normal coffer snapshot.
//!
//! The runbook's file is `<BACKUP_DIR>.tar.gz.age`: an age-encrypted
//! tar.gz of a flat directory holding a `mongodump --archive --gzip` file
//! (`issuer-directory-<YYYYMMDDTHHMMSSZ>.gz`), `issuer-directory.yaml`,
//! `csaf-publishers.json`, a `*.secret` file (`KEY=VALUE` lines) and
//! `SHA256SUMS` (`sha256sum *`).
//!
//! No plaintext touches the disk and no temp directory is used: the file
//! is decrypted (core's [`Identities`]), gunzipped and untarred as one
//! stream; each member goes into a [`Spill`] (memory up to 8 MiB, beyond
//! that an unlinked temp file encrypted with an ephemeral key) while its
//! SHA-256 is computed. Only when every `SHA256SUMS` line matched (and
//! every member is listed) are the members handed to
//! [`coffer_core::run_backup`] as sources — the archive through the
//! `mongodump` source ([`MongodumpSource::from_archive_reader`]), the
//! other files as `file` sources and the secret as an `env` source
//! (secrets area, mode 0600). Those in-memory sources record the same
//! kinds and origins as the real ones, so `coffer restore` restores them
//! with the real `file`, `env` and `mongodump` restorers; their origin
//! paths are the runbook's backup directory next to the input file
//! (`<dir of FILE>/<BACKUP_DIR name>/…`), so restore them with `--target`.
//! On a checksum failure nothing is written anywhere.

use std::path::PathBuf;

use clap::Args;

use crate::ctx::{CmdResult, Ctx, KeySel, SinkSel};

/// `coffer import-runbook FILE.tar.gz.age --identity F --sink S`.
#[derive(Debug, Args)]
pub struct ImportRunbookArgs {
    /// The runbook's encrypted backup, `<BACKUP_DIR>.tar.gz.age`.
    pub file: PathBuf,
    #[command(flatten)]
    pub keys: KeySel,
    #[command(flatten)]
    pub sink: SinkSel,
    /// Job name of the new snapshot.
    #[arg(long, default_value = "issuer-directory")]
    pub job: String,
    /// Public key to encrypt the snapshot to (default: the job's or the
    /// config's recipients); repeatable.
    #[arg(long = "recipient", short = 'r', value_name = "KEY")]
    pub recipients: Vec<String>,
    /// Snapshot time (RFC 3339) instead of the one in the archive's name.
    #[arg(long)]
    pub time: Option<String>,
    /// Tag the snapshot (besides `runbook-import`); repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// zstd (default), zstd:LEVEL, gzip, gzip:LEVEL, none.
    #[arg(long)]
    pub compression: Option<String>,
}

/// Runs `coffer import-runbook`.
pub(crate) async fn exec(ctx: &Ctx, a: ImportRunbookArgs) -> CmdResult {
    #[cfg(feature = "mongo")]
    {
        imp::run(ctx, a).await
    }
    #[cfg(not(feature = "mongo"))]
    {
        let _ = (ctx, a);
        Err(coffer_core::Error::new(
            coffer_core::ErrorKind::Unsupported,
            "this coffer was built without the MongoDB source",
        )
        .with_hint("build coffer with the `mongo` feature to import runbook backups")
        .into())
    }
}

#[cfg(feature = "mongo")]
mod imp {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::io::{self, BufReader, Read};
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use coffer_core::{
        Area, BackupRequest, CaptureContext, Compression, Encryption, Entry, EntryBody, EntrySender, Error,
        ErrorKind, Identities, RecipientKey, RestoreOptions, Restorer, Result, SinkTarget, Source,
        SourceInfo, SourceReport, async_trait, config_error,
    };
    use coffer_source_mongo::{MongodumpSource, Spill, SpillBody};
    use serde_json::json;

    use super::ImportRunbookArgs;
    use crate::Failure;
    use crate::ctx::{CmdResult, Ctx};
    use crate::output::{print_json, size};

    /// Bytes of one member kept in memory before spilling (encrypted).
    const MEMORY_LIMIT: usize = 8 << 20;
    /// Largest `SHA256SUMS` read.
    const MAX_SUMS: u64 = 1 << 20;
    const SUMS: &str = "SHA256SUMS";

    /// One regular file of the tar.
    struct Member {
        name: String,
        mode: u32,
        mtime: i64,
        body: SpillBody,
    }

    /// The verified content of a runbook backup.
    struct Extracted {
        members: Vec<Member>,
        /// Lines of SHA256SUMS checked.
        checked: usize,
    }

    fn damaged(what: impl Into<String>, file: &Path) -> Error {
        Error::new(ErrorKind::Integrity, what.into())
            .with_context("file", file.display().to_string())
            .with_hint(
                "the runbook backup is damaged or was altered; use another copy (nothing was imported)",
            )
    }

    /// Maps an error while reading the decrypted stream: age reports a
    /// failed authentication as an I/O error.
    fn stream_error(e: io::Error, file: &Path) -> Error {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => damaged("the encrypted file is truncated", file),
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other => {
                damaged(format!("cannot read the encrypted tar.gz: {e}"), file)
            }
            _ => Error::io(format!("cannot read {}", file.display()), e),
        }
    }

    /// Decrypts, gunzips and untars `file` into spills, then checks every
    /// `SHA256SUMS` line.
    fn extract(file: &Path, ids: &Identities) -> Result<Extracted> {
        let input = File::open(file).map_err(|e| {
            Error::io(format!("cannot open {}", file.display()), e)
                .with_hint("give the runbook's <BACKUP_DIR>.tar.gz.age file")
        })?;
        let plain = ids.decrypt(BufReader::with_capacity(256 * 1024, input))?;
        let mut plain = BufReader::with_capacity(256 * 1024, plain);
        {
            use std::io::BufRead;
            let head = plain.fill_buf().map_err(|e| stream_error(e, file))?;
            if !head.starts_with(&[0x1f, 0x8b]) {
                return Err(damaged("the decrypted content is not a tar.gz", file)
                    .with_hint("give the file written by the runbook's `tar czf … && age -r …`"));
            }
        }
        let gz = flate2::read::GzDecoder::new(plain);
        let mut archive = tar::Archive::new(gz);
        let mut members: Vec<Member> = Vec::new();
        let mut sums: Option<Vec<u8>> = None;
        let entries = archive.entries().map_err(|e| stream_error(e, file))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| stream_error(e, file))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = raw.trim_start_matches("./").trim_end_matches('/').to_string();
            let kind = entry.header().entry_type();
            if kind.is_dir() && (name.is_empty() || name == ".") {
                continue;
            }
            if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            if !kind.is_file() {
                return Err(damaged(
                    format!("unexpected tar member `{raw}` (not a regular file)"),
                    file,
                )
                .with_hint("the runbook writes a flat directory of files; check the backup by hand"));
            }
            if name.is_empty() || name.contains('/') || name == ".." {
                return Err(damaged(
                    format!("unexpected tar member `{raw}` (a nested or unsafe path)"),
                    file,
                ));
            }
            if members.iter().any(|m| m.name == name) || (name == SUMS && sums.is_some()) {
                return Err(damaged(format!("the tar holds `{name}` twice"), file));
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let mtime = entry.header().mtime().unwrap_or(0) as i64;
            if name == SUMS {
                let mut text = Vec::new();
                (&mut entry)
                    .take(MAX_SUMS + 1)
                    .read_to_end(&mut text)
                    .map_err(|e| stream_error(e, file))?;
                if text.len() as u64 > MAX_SUMS {
                    return Err(damaged("SHA256SUMS is over 1 MiB", file));
                }
                sums = Some(text);
                continue;
            }
            let mut spill = Spill::new(MEMORY_LIMIT);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = entry.read(&mut buf).map_err(|e| stream_error(e, file))?;
                if n == 0 {
                    break;
                }
                spill.write(&buf[..n]).map_err(|e| {
                    Error::io("cannot buffer a member in an encrypted temp file", e)
                        .with_hint("make room in the temp directory (TMPDIR)")
                })?;
            }
            let body = spill
                .finish()
                .map_err(|e| Error::io("cannot buffer a member", e))?;
            members.push(Member {
                name,
                mode,
                mtime,
                body,
            });
        }
        let Some(sums) = sums else {
            return Err(damaged("the backup holds no SHA256SUMS", file).with_hint(
                "the runbook writes SHA256SUMS before encrypting; without it nothing can be checked",
            ));
        };
        let checked = check_sums(&sums, &members, file)?;
        Ok(Extracted { members, checked })
    }

    /// Checks every line of `SHA256SUMS` against the members, and that
    /// every member is listed; returns the number of lines checked.
    fn check_sums(text: &[u8], members: &[Member], file: &Path) -> Result<usize> {
        let text = String::from_utf8_lossy(text);
        let mut listed: BTreeMap<String, String> = BTreeMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = line.split_at_checked(64).and_then(|(hash, rest)| {
                let name = rest.strip_prefix("  ").or_else(|| rest.strip_prefix(" *"))?;
                hash.bytes().all(|b| b.is_ascii_hexdigit()).then(|| {
                    (
                        hash.to_ascii_lowercase(),
                        name.trim_start_matches("./").to_string(),
                    )
                })
            });
            let Some((hash, name)) = parsed else {
                return Err(damaged(
                    format!("SHA256SUMS line {} is not `<sha256>  <file>`", i + 1),
                    file,
                ));
            };
            if name == SUMS {
                // `sha256sum * > SHA256SUMS` run twice lists the file itself.
                continue;
            }
            listed.insert(name, hash);
        }
        for (name, hash) in &listed {
            match members.iter().find(|m| &m.name == name) {
                None => problems.push(format!(
                    "{name}: listed in SHA256SUMS but missing from the backup"
                )),
                Some(m) if hex::encode(m.body.sha256) != *hash => {
                    problems.push(format!("{name}: checksum mismatch"))
                }
                Some(_) => {}
            }
        }
        for m in members {
            if !listed.contains_key(&m.name) {
                problems.push(format!("{}: not listed in SHA256SUMS", m.name));
            }
        }
        if listed.is_empty() {
            problems.push("SHA256SUMS lists no file".to_string());
        }
        if !problems.is_empty() {
            return Err(damaged(
                format!("the backup failed its SHA256SUMS check: {}", problems.join("; ")),
                file,
            ));
        }
        Ok(listed.len())
    }

    /// `issuer-directory-20261127T221500Z.gz`, else the backup directory's
    /// name `2026-11-27T221500` (the runbook's local time, read as UTC).
    fn snapshot_time(archive: &str, backup_name: &str) -> Option<jiff::Timestamp> {
        let utc = |fmt: &str, s: &str| -> Option<jiff::Timestamp> {
            let dt = jiff::fmt::strtime::parse(fmt, s).ok()?.to_datetime().ok()?;
            dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
        };
        let stem = archive.strip_suffix(".gz").unwrap_or(archive);
        let stamp = stem.rsplit('-').next().unwrap_or(stem);
        utc("%Y%m%dT%H%M%SZ", stamp).or_else(|| utc("%Y-%m-%dT%H%M%S", backup_name))
    }

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
    fn sources(
        ctx: &Ctx,
        extracted: Extracted,
        origin_dir: &Path,
        backup_name: &str,
    ) -> Result<(Vec<Arc<dyn Source>>, String)> {
        let mut archive: Option<Member> = None;
        let mut files = Vec::new();
        let mut secrets = Vec::new();
        for m in extracted.members {
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
        let archive_name = archive.name.clone();
        let mut out: Vec<Arc<dyn Source>> = vec![Arc::new(MongodumpSource::from_archive_reader(
            "mongo",
            origin_dir.join(&archive.name),
            archive.body.reader,
        ))];
        let file_factory = ctx.registry.source_factory("file")?;
        let mut names: Vec<String> = vec!["mongo".into()];
        for m in files {
            let base = match m.name.as_str() {
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
            };
            let name = crate::ctx::unique_name(&base, &names);
            names.push(name.clone());
            let origin = json!({ "path": origin_dir.join(&m.name).to_string_lossy(), "is_dir": false });
            let delegate = file_factory.from_origin(&name, &origin)?;
            out.push(Arc::new(Imported {
                delegate,
                area: Area::Files,
                path: m.name.clone(),
                mode: m.mode,
                mtime: m.mtime,
                report: SourceReport {
                    summary: format!("1 file, {} (from {backup_name})", size(m.body.size)),
                    details: json!({ "files": 1, "dirs": 0, "symlinks": 0, "bytes": m.body.size, "skipped": 0,
                                     "imported_from": m.name, "sha256": hex::encode(m.body.sha256) }),
                },
                body: Mutex::new(Some((m.body.size, m.body.reader))),
            }));
        }
        for mut m in secrets {
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
            let name = crate::ctx::unique_name("secret", &names);
            names.push(name.clone());
            let path = origin_dir.join(&m.name);
            let delegate: Arc<dyn Source> =
                Arc::new(coffer_source_env::EnvSource::new(&name, &path, keys.clone())?);
            out.push(Arc::new(Imported {
                delegate,
                area: Area::Secrets,
                path: m.name.clone(),
                mode: 0o600,
                mtime: m.mtime,
                report: SourceReport {
                    summary: format!(
                        "{} key{} from {} (from {backup_name})",
                        keys.len(),
                        if keys.len() == 1 { "" } else { "s" },
                        m.name
                    ),
                    details: json!({ "keys": keys, "file": path.to_string_lossy() }),
                },
                body: Mutex::new(Some((content.len() as u64, Box::new(io::Cursor::new(content))))),
            }));
        }
        Ok((out, archive_name))
    }

    pub(super) async fn run(ctx: &Ctx, a: ImportRunbookArgs) -> CmdResult {
        let config = ctx.config()?;
        let file = std::path::absolute(&a.file)
            .map_err(|e| Error::io(format!("cannot resolve {}", a.file.display()), e))?;
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let backup_name = file_name
            .strip_suffix(".tar.gz.age")
            .or_else(|| file_name.strip_suffix(".age"))
            .unwrap_or(&file_name)
            .to_string();
        let origin_dir: PathBuf = file.parent().unwrap_or(Path::new("/")).join(&backup_name);

        // Everything that can be refused is checked before any decryption.
        if a.sink.sinks.is_empty() {
            return Err(config_error("no sink given")
                .with_hint("add --sink DIR_OR_URL (or a sink name from coffer.toml)")
                .into());
        }
        let recipients = if !a.recipients.is_empty() {
            a.recipients.clone()
        } else {
            let job = config.as_ref().and_then(|c| c.jobs.get(&a.job));
            job.and_then(|j| j.recipients.clone())
                .or_else(|| config.as_ref().map(|c| c.recipients.clone()))
                .unwrap_or_default()
        };
        if recipients.is_empty() {
            return Err(config_error("no recipient to encrypt the snapshot to")
                .with_hint("pass --recipient age1… (or set `recipients` in coffer.toml)")
                .into());
        }
        let keys = recipients
            .iter()
            .map(|r| RecipientKey::parse(r))
            .collect::<Result<Vec<_>>>()?;
        let encryption = Encryption::Recipients(keys);
        encryption.validate()?;
        let compression = match a
            .compression
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.compression.clone()))
        {
            Some(c) => Compression::parse(&c)?,
            None => Compression::default(),
        };
        let forced_time = crate::ctx::snapshot_time(a.time.as_deref())?;
        let mut sinks = Vec::new();
        for s in &a.sink.sinks {
            sinks.push(SinkTarget {
                name: s.clone(),
                sink: ctx.target_sink(s, config.as_ref())?,
                required: true,
            });
        }
        let signing_key = crate::ctx::signing_key(None, None, config.as_ref())?;
        let ids = crate::ctx::identities(&a.keys)?;
        if ids.is_empty() {
            return Err(config_error("no identity to decrypt the runbook backup")
                .with_hint("pass --identity FILE (the age identity the runbook's `age -r` encrypted to)")
                .into());
        }

        let path = file.clone();
        let extracted = tokio::task::spawn_blocking(move || extract(&path, &ids))
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("the import task failed: {e}")))??;
        let checked = extracted.checked;
        let (sources, archive_name) = sources(ctx, extracted, &origin_dir, &backup_name)?;
        let time = match forced_time.or_else(|| snapshot_time(&archive_name, &backup_name)) {
            Some(t) => t,
            None => {
                return Err(config_error(format!(
                    "cannot tell the backup's time from `{archive_name}` or `{file_name}`"
                ))
                .with_hint("pass --time 2026-11-27T22:15:00Z")
                .into());
            }
        };
        let mut tags = vec!["runbook-import".to_string()];
        tags.extend(a.tags.iter().cloned());
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(2);
        let req = BackupRequest {
            job: a.job.clone(),
            sources,
            sinks,
            encryption,
            compression,
            tags,
            time: Some(time),
            threads,
            signing_key,
        };
        let (outcome, secs) = crate::ctx::run_locked_backup(ctx, req, "import-runbook").await?;
        if ctx.json {
            let mut report = coffer_core::ops::BackupReport::new(&outcome, secs, None, outcome.required_ok());
            report.imported_from = Some(file.to_string_lossy().into_owned());
            report.sha256sums_checked = Some(checked);
            print_json(&report);
        } else {
            println!(
                "snapshot {} (job {}, time {}): imported {} ({checked} SHA256SUMS lines ok), {} files, {} in {:.1}s",
                outcome.index.id,
                outcome.index.job,
                outcome.index.created_at,
                file.display(),
                outcome.entries,
                size(outcome.plain_bytes),
                secs
            );
            for s in &outcome.sources {
                println!("  source {} ({}): {}", s.name, s.kind, s.report.summary);
            }
            for s in &outcome.sinks {
                match &s.result {
                    Ok(()) => println!("  sink {} ({}): ok", s.name, s.location),
                    Err(e) => println!("  sink {} ({}): FAILED: {e}", s.name, s.location),
                }
            }
        }
        if !outcome.required_ok() {
            let failed: Vec<_> = outcome
                .sinks
                .iter()
                .filter(|s| s.result.is_err())
                .map(|s| s.name.as_str())
                .collect();
            return Err(Failure::Partial(format!(
                "snapshot {} was written, but sink(s) failed: {}",
                outcome.index.id,
                failed.join(", ")
            )));
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn times_from_names() {
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
}
