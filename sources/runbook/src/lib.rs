//! coffer-source-runbook: the sources of a backup made by the manual
//! Issuer Directory runbook, for `coffer import-runbook`, which turns it
//! into a normal coffer snapshot.
//!
//! The runbook's file is `<BACKUP_DIR>.tar.gz.age`: an age-encrypted
//! tar.gz of a flat directory holding a `mongodump --archive --gzip` file
//! (`issuer-directory-<YYYYMMDDTHHMMSSZ>.gz`), `issuer-directory.yaml`,
//! `csaf-publishers.json`, a `*.secret` file (`KEY=VALUE` lines) and
//! `SHA256SUMS` (`sha256sum *`).
//!
//! No plaintext touches the disk and no temp directory is used: the file
//! is decrypted (core's [`Identities`](coffer_core::keys::Identities)), gunzipped and untarred as one
//! stream; each member goes into a [`Spill`](coffer_core::spill::Spill) (memory up to 8 MiB, beyond
//! that an unlinked temp file encrypted with an ephemeral key) while its
//! SHA-256 is computed. Only when every `SHA256SUMS` line matched (and
//! every member is listed) are the members handed to
//! [`coffer_core::pipeline::run_backup`] as sources — the archive through the
//! `mongodump` source ((`MongodumpSource::from_archive_reader`)), the
//! other files as `file` sources and the secret as an `env` source
//! (secrets area, mode 0600). Those in-memory sources record the same
//! kinds and origins as the real ones, so `coffer restore` restores them
//! with the real `file`, `env` and `mongodump` restorers; their origin
//! paths are the runbook's backup directory next to the input file
//! (`<dir of FILE>/<BACKUP_DIR name>/…`), so restore them with `--target`.
//! On a checksum failure nothing is written anywhere.

mod error;
mod extract;
mod sources;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::{Result, Source, SourceFactory, keys::Identities};

/// A runbook backup read and checked: its sources, ready for a backup run.
#[derive(Debug)]
pub struct RunbookImport {
    /// In bundle order: `mongo` (the archive), the files, the secret.
    pub sources: Vec<Arc<dyn Source>>,
    /// The mongodump archive's name (it carries the backup's time).
    pub archive_name: String,
    /// `SHA256SUMS` lines checked.
    pub checked: usize,
}

/// `<BACKUP_DIR>` of `<BACKUP_DIR>.tar.gz.age`.
pub fn backup_name(file: &Path) -> String {
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file_name
        .strip_suffix(".tar.gz.age")
        .or_else(|| file_name.strip_suffix(".age"))
        .unwrap_or(&file_name)
        .to_string()
}

/// Reads `file` (decrypting with `ids`), checks every `SHA256SUMS` line and
/// returns its sources; `file_factory` (the registry's `file` kind) gives
/// the files their restore origin, the runbook's backup directory next to
/// `file`. Blocking: run it on a blocking thread. On a checksum failure
/// nothing was written anywhere.
pub fn read(file: &Path, ids: &Identities, file_factory: &dyn SourceFactory) -> Result<RunbookImport> {
    let backup_name = backup_name(file);
    let origin_dir: PathBuf = file.parent().unwrap_or(Path::new("/")).join(&backup_name);
    let extracted = extract::extract(file, ids)?;
    let checked = extracted.checked;
    let (sources, archive_name) = sources::sources(file_factory, extracted, &origin_dir, &backup_name)?;
    Ok(RunbookImport {
        sources,
        archive_name,
        checked,
    })
}

/// `issuer-directory-20261127T221500Z.gz`, else the backup directory's
/// name `2026-11-27T221500` (the runbook's local time, read as UTC).
pub fn snapshot_time(archive: &str, backup_name: &str) -> Option<jiff::Timestamp> {
    let utc = |fmt: &str, s: &str| -> Option<jiff::Timestamp> {
        let dt = jiff::fmt::strtime::parse(fmt, s).ok()?.to_datetime().ok()?;
        dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
    };
    let stem = archive.strip_suffix(".gz").unwrap_or(archive);
    let stamp = stem.rsplit('-').next().unwrap_or(stem);
    utc("%Y%m%dT%H%M%SZ", stamp).or_else(|| utc("%Y-%m-%dT%H%M%S", backup_name))
}
