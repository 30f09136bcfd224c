//! [`FileSource`]: capture of one file or a directory tree.
//!
//! Tokio use: the tree is walked (metadata only, no content) inside
//! `spawn_blocking`, then the entries are sent one by one; file bodies are
//! lazy readers that the pipeline consumes on its own blocking thread, so
//! no file descriptor is held before its content is needed.

use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::{
    Area, CaptureContext, Entry, EntryBody, EntrySender, Error, ErrorKind, RestoreOptions, Restorer, Result,
    Source, SourceFactory, SourceInfo, SourceReport, config_error, toml,
};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::json;
use walkdir::WalkDir;

use crate::KIND;
use crate::config::FileSourceConfig;
use crate::error::{not_file_or_dir, read_error};
use crate::restore::FileRestorer;

/// A file or a directory tree captured into `files/<source>/…`.
///
/// A single file becomes one entry named after its basename; a directory
/// becomes one entry per file, directory and symlink under it (the
/// directory itself is not an entry), with paths relative to it.
pub struct FileSource {
    name: String,
    path: PathBuf,
    /// Known when rebuilt from a bundle's origin; otherwise read from the
    /// filesystem when needed.
    is_dir: Option<bool>,
    exclude: Vec<String>,
    exclude_set: GlobSet,
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("is_dir", &self.is_dir)
            .field("exclude", &self.exclude)
            .finish()
    }
}

impl FileSource {
    /// A source named `name` backing up `path` (made absolute against the
    /// current directory), without excludes.
    pub fn new(name: impl Into<String>, path: impl AsRef<Path>) -> Result<Self> {
        Self::build(name.into(), absolute(path.as_ref())?, Vec::new(), None)
    }

    /// A source from its config table; a relative `path` is resolved
    /// against `base_dir`.
    pub fn with_config(name: impl Into<String>, config: &FileSourceConfig, base_dir: &Path) -> Result<Self> {
        let path = absolute(&base_dir.join(&config.path))?;
        Self::build(name.into(), path, config.exclude.clone(), None)
    }

    fn build(name: String, path: PathBuf, exclude: Vec<String>, is_dir: Option<bool>) -> Result<Self> {
        if path.file_name().is_none() {
            return Err(
                config_error(format!("file source `{name}` has no file name in its path"))
                    .with_context("path", path.display())
                    .with_hint("name a file or a directory, not `/` or a path ending in `..`"),
            );
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in &exclude {
            let glob = Glob::new(pattern).map_err(|e| {
                config_error(format!("invalid exclude pattern `{pattern}`: {e}"))
                    .with_context("source", &name)
                    .with_hint("patterns use glob syntax, e.g. `*.log` or `tmp/**`")
                    .set_source(e)
            })?;
            builder.add(glob);
        }
        let exclude_set = builder.build().map_err(|e| {
            config_error(format!("invalid exclude patterns: {e}"))
                .with_context("source", &name)
                .set_source(e)
        })?;
        Ok(FileSource {
            name,
            path,
            is_dir,
            exclude,
            exclude_set,
        })
    }

    /// The absolute path this source backs up.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn is_dir(&self) -> bool {
        self.is_dir
            .unwrap_or_else(|| fs::metadata(&self.path).map(|m| m.is_dir()).unwrap_or(false))
    }
}

#[async_trait]
impl Source for FileSource {
    fn info(&self) -> SourceInfo {
        let is_dir = self.is_dir();
        let what = if is_dir { "directory" } else { "file" };
        SourceInfo::new(
            KIND,
            self.name.clone(),
            format!("{what} {}", self.path.display()),
            json!({ "path": self.path.to_string_lossy(), "is_dir": is_dir }),
        )
    }

    async fn check(&self) -> Result<()> {
        let path = self.path.clone();
        blocking(move || {
            let meta = fs::metadata(&path).map_err(|e| read_error(&path, e))?;
            if meta.is_dir() {
                fs::read_dir(&path).map_err(|e| read_error(&path, e))?;
            } else if meta.is_file() {
                open_for_read(&path, true).map_err(|e| read_error(&path, e))?;
            } else {
                return Err(not_file_or_dir(&path));
            }
            Ok(())
        })
        .await
    }

    async fn capture(&self, ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        let path = self.path.clone();
        let exclude = self.exclude_set.clone();
        let items = blocking(move || scan(&path, &exclude)).await?;
        let bytes = items
            .iter()
            .map(|i| match i.kind {
                ScannedKind::File { size, .. } => size,
                _ => 0,
            })
            .sum();
        ctx.report_size(bytes);
        let mut stats = Stats::default();
        for item in items {
            stats.add(&item);
            out.send(item.into_entry()).await?;
        }
        Ok(stats.report())
    }

    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        let name = self.name.clone();
        let path = self.path.clone();
        let is_dir = self.is_dir;
        let opts = opts.clone();
        let restorer = blocking(move || FileRestorer::new(name, path, is_dir, &opts)).await?;
        Ok(Box::new(restorer))
    }
}

/// Registers [`FileSource`] under [`KIND`].
pub(crate) struct FileSourceFactory;

impl SourceFactory for FileSourceFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Source>> {
        let config = FileSourceConfig::from_table(table)?;
        Ok(Arc::new(FileSource::with_config(name, &config, base_dir)?))
    }

    fn spec_name(&self, spec: &str) -> String {
        spec_name(spec)
    }

    fn from_spec(&self, name: &str, spec: &str) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(FileSource::new(name, spec)?))
    }

    fn from_origin(&self, name: &str, origin: &serde_json::Value) -> Result<Arc<dyn Source>> {
        /// What [`FileSource::info`] records.
        #[derive(serde::Deserialize)]
        struct Origin {
            path: PathBuf,
            is_dir: bool,
        }
        let Origin { path, is_dir } = coffer_core::parse_origin(KIND, name, origin)?;
        if !path.is_absolute() {
            return Err(coffer_core::malformed_origin(KIND, name));
        }
        Ok(Arc::new(FileSource::build(
            name.to_string(),
            path,
            Vec::new(),
            Some(is_dir),
        )?))
    }
}

/// The basename of `spec`, reduced to `[A-Za-z0-9._-]`, or `files`.
pub(crate) fn spec_name(spec: &str) -> String {
    let base = Path::new(spec)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.chars().all(|c| c == '.' || c == '_') {
        "files".to_string()
    } else {
        clean
    }
}

/// One thing found by [`scan`]: metadata only.
struct Scanned {
    rel: String,
    abs: PathBuf,
    mode: u32,
    mtime: i64,
    /// `(uid, gid)`, given back by a restore run as root.
    owner: (u32, u32),
    /// A regular file's identity on disk.
    stat: Option<coffer_core::FileStat>,
    kind: ScannedKind,
}

enum ScannedKind {
    /// `follow`: the path may be a symlink the user named (the source's
    /// own path), so it is opened following links.
    File {
        size: u64,
        follow: bool,
    },
    Dir,
    Symlink {
        target: String,
    },
}

impl Scanned {
    fn into_entry(self) -> Entry {
        let body = match self.kind {
            ScannedKind::File { size, follow } => EntryBody::File {
                size,
                reader: Box::new(LazyFile {
                    path: self.abs,
                    follow,
                    remaining: size,
                    file: None,
                }),
            },
            ScannedKind::Dir => EntryBody::Dir,
            ScannedKind::Symlink { target } => EntryBody::Symlink { target },
        };
        Entry {
            area: Area::Files,
            path: self.rel,
            mode: self.mode,
            mtime: self.mtime,
            owner: Some(self.owner),
            stat: self.stat,
            body,
        }
    }
}

/// Lists what `root` holds, sorted by path, reading no content.
fn scan(root: &Path, exclude: &GlobSet) -> Result<Vec<Scanned>> {
    let meta = fs::metadata(root).map_err(|e| read_error(root, e))?;
    if meta.is_file() {
        return Ok(vec![scan_file(root, &meta)?]);
    }
    if !meta.is_dir() {
        return Err(not_file_or_dir(root));
    }
    let mut items = Vec::new();
    let walker = WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            e.depth() == 0 || !exclude.is_match(rel)
        });
    for dent in walker {
        let dent = dent.map_err(|e| walk_error(root, e))?;
        if dent.depth() == 0 {
            continue;
        }
        let abs = dent.path();
        let rel = utf8_name(abs, abs.strip_prefix(root).unwrap_or(abs))?;
        let meta: Metadata = dent.metadata().map_err(|e| {
            let io = e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("metadata unavailable"));
            read_error(abs, io)
        })?;
        let Some(kind) = scanned_kind(abs, &meta)? else {
            continue;
        };
        items.push(Scanned {
            rel,
            abs: abs.to_path_buf(),
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            owner: (meta.uid(), meta.gid()),
            stat: matches!(kind, ScannedKind::File { .. }).then(|| coffer_core::FileStat::of(&meta)),
            kind,
        });
    }
    items.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(items)
}

/// The one item of a source whose path is a file (followed if a symlink),
/// checked to be readable.
fn scan_file(root: &Path, meta: &Metadata) -> Result<Scanned> {
    let name = root.file_name().unwrap_or_default();
    open_for_read(root, true).map_err(|e| read_error(root, e))?;
    let rel = utf8_name(root, name.as_ref())?;
    Ok(Scanned {
        rel,
        abs: root.to_path_buf(),
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        owner: (meta.uid(), meta.gid()),
        stat: Some(coffer_core::FileStat::of(meta)),
        kind: ScannedKind::File {
            size: meta.len(),
            follow: true,
        },
    })
}

/// The error of a failed step of the walk under `root`.
fn walk_error(root: &Path, e: walkdir::Error) -> Error {
    let path = e.path().unwrap_or(root).to_path_buf();
    match e.into_io_error() {
        Some(io) => read_error(&path, io),
        None => {
            Error::new(ErrorKind::Unexpected, "directory walk failed").with_context("path", path.display())
        }
    }
}

/// What the walk found at `abs` (a file is checked to be readable); `None`
/// for a socket, FIFO or device file, which is skipped with a warning.
fn scanned_kind(abs: &Path, meta: &Metadata) -> Result<Option<ScannedKind>> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        ScannedKind::Dir
    } else if ft.is_file() {
        open_for_read(abs, false).map_err(|e| read_error(abs, e))?;
        ScannedKind::File {
            size: meta.len(),
            follow: false,
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(abs).map_err(|e| read_error(abs, e))?;
        let target = target.to_str().map(str::to_owned).ok_or_else(|| {
            Error::new(ErrorKind::Unsupported, "symlink target is not valid UTF-8")
                .with_context("path", abs.display())
                .with_hint("add the link to the source's `exclude` patterns")
        })?;
        ScannedKind::Symlink { target }
    } else {
        tracing::warn!(path = %abs.display(), "skipping a socket, FIFO or device file: only files, directories and symlinks are backed up");
        return Ok(None);
    };
    Ok(Some(kind))
}

/// `rel` as a `/`-separated UTF-8 string.
fn utf8_name(abs: &Path, rel: &Path) -> Result<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|p| p.join("/")).ok_or_else(|| {
        Error::new(ErrorKind::Unsupported, "file name is not valid UTF-8")
            .with_context("path", abs.to_string_lossy())
            .with_hint("rename it, or add it to the source's `exclude` patterns")
    })
}

fn open_for_read(path: &Path, follow: bool) -> io::Result<File> {
    let mut opts = fs::OpenOptions::new();
    opts.read(true);
    if !follow {
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    opts.open(path)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(format!("cannot resolve {}", path.display()), e))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(ErrorKind::Unexpected, format!("file source task failed: {e}")).set_source(e)
    })?
}

/// A file body that opens its file on the first read and reads exactly
/// `size` bytes, closing the file as soon as they are read.
struct LazyFile {
    path: PathBuf,
    follow: bool,
    remaining: u64,
    file: Option<File>,
}

impl Read for LazyFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            self.file = None;
            return Ok(0);
        }
        if self.file.is_none() {
            let file =
                open_for_read(&self.path, self.follow).map_err(|e| read_error(&self.path, e).into_io())?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = file
            .read(&mut buf[..want])
            .map_err(|e| read_error(&self.path, e).into_io())?;
        if n == 0 {
            self.file = None;
            // Not `Integrity`: nothing is corrupt, the file changed under
            // us, and a later run may well succeed.
            return Err(
                Error::new(ErrorKind::Unexpected, "file shrank while it was being backed up")
                    .with_context("path", self.path.display())
                    .with_hint("stop whatever writes to it during the backup, or re-run the backup")
                    .temporary()
                    .into_io(),
            );
        }
        self.remaining -= n as u64;
        if self.remaining == 0 {
            self.file = None;
        }
        Ok(n)
    }
}

/// Counts for the capture report.
#[derive(Default)]
struct Stats {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
}

impl Stats {
    fn add(&mut self, item: &Scanned) {
        match item.kind {
            ScannedKind::File { size, .. } => {
                self.files += 1;
                self.bytes += size;
            }
            ScannedKind::Dir => self.dirs += 1,
            ScannedKind::Symlink { .. } => self.symlinks += 1,
        }
    }

    fn report(&self) -> SourceReport {
        let mut parts = vec![plural(self.files, "file")];
        if self.dirs > 0 {
            parts.push(plural(self.dirs, "dir"));
        }
        if self.symlinks > 0 {
            parts.push(plural(self.symlinks, "symlink"));
        }
        parts.push(coffer_core::human_size(self.bytes));
        SourceReport {
            position: None,
            summary: parts.join(", "),
            details: json!({
                "files": self.files,
                "dirs": self.dirs,
                "symlinks": self.symlinks,
                "bytes": self.bytes,
            }),
        }
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_names() {
        assert_eq!(spec_name("/etc/app.yaml"), "app.yaml");
        assert_eq!(spec_name("seed data/my file!.json"), "my_file_.json");
        assert_eq!(spec_name("/"), "files");
        assert_eq!(spec_name(".."), "files");
        assert_eq!(spec_name("conf/"), "conf");
    }
}
