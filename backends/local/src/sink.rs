//! [`LocalSink`]: objects as files under a root directory.
//!
//! All file I/O is blocking and runs on Tokio's blocking pool, never on the
//! reactor: a put receives the body's chunks in async code and hands them
//! through a bounded channel to one blocking task that writes (buffered, no
//! per-chunk fsync), fsyncs and renames; a get has one blocking task read
//! ahead 256 KiB chunks into a bounded channel; list, delete and the
//! directory checks run in `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use coffer_core::{
    ByteStream, Error, ErrorKind, ObjectMeta, PutMode, PutOptions, Result, Sink, SinkInfo, SinkSettings,
    validate_key, validate_prefix,
};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::config::LocalSinkConfig;
use crate::error::LocalError;
use crate::write::ObjectWriter;

/// Name prefix of the files a put writes before renaming them into place.
use coffer_core::fsutil::TEMP_PREFIX;
/// Size of the chunks a get yields.
const READ_CHUNK: u64 = 256 * 1024;
/// Chunks a get reads ahead of its consumer.
const READ_AHEAD: usize = 4;
/// Chunks a put buffers between the body and the writing thread.
const WRITE_QUEUE: usize = 2;
/// A sink storing each object as a file under a root directory.
///
/// Cheap to clone; holds no open file. See the crate docs for the on-disk
/// layout and guarantees.
#[derive(Debug, Clone)]
pub struct LocalSink {
    root: Arc<PathBuf>,
    swept: Arc<std::sync::atomic::AtomicBool>,
    /// Set by [`LocalSink::checked`]: the root must be a sink (hold the
    /// marker, or snapshots) before anything is read or written.
    guard: Option<Arc<Guard>>,
}

/// The marker object of an initialised local sink.
pub const MARKER: &str = "coffer-sink.json";

/// The check of a [`LocalSink::checked`] sink, done once.
#[derive(Debug)]
struct Guard {
    /// Create the sink where there is none.
    create: bool,
    ready: tokio::sync::OnceCell<()>,
}

/// Temp files of another host (or an older version) older than this are
/// leftovers of killed runs (no put runs that long); those of a process of
/// this host that is gone are leftovers at once. The first put of a
/// process removes them.
const STALE_TEMP_AGE: Duration = coffer_core::fsutil::STALE_TEMP_AGE;

impl LocalSink {
    /// A sink storing under `root`. Nothing is checked or created until the
    /// first put.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalSink {
            root: Arc::new(root.into()),
            swept: Arc::default(),
            guard: None,
        }
    }

    /// A sink from its settings (see [`LocalSink::checked`] for what the
    /// `coffer` command line builds).
    pub fn from_config(config: &LocalSinkConfig) -> Self {
        Self::new(config.path.clone())
    }

    /// This sink, refusing to read or write unless its root is a coffer
    /// sink: it holds the marker [`MARKER`] (written by [`Sink::init`],
    /// `coffer sink init`) or snapshots of an older version. So a path of
    /// an unmounted disk, or a mistyped one, fails with
    /// [`ErrorKind::SinkMissing`] instead of filling another filesystem or
    /// listing nothing. With `create`, the sink is made on first use
    /// instead (only the last path component: its parent must exist).
    pub fn checked(mut self, create: bool) -> Self {
        self.guard = Some(Arc::new(Guard {
            create,
            ready: tokio::sync::OnceCell::new(),
        }));
        self
    }

    /// Passes once the root is known to be a sink (see [`LocalSink::checked`]).
    async fn ready(&self) -> Result<()> {
        let Some(guard) = &self.guard else {
            return Ok(());
        };
        let root = self.root.clone();
        let create = guard.create;
        guard
            .ready
            .get_or_try_init(|| blocking(move || prepare(&root, create)))
            .await?;
        Ok(())
    }

    /// A sink from `file:///abs`, `file:path` or a plain path (see
    /// [`LocalSinkConfig::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::from_config(&LocalSinkConfig::from_url(url)?))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the `.coffer-tmp-*` files only a crash or a killed process
    /// leaves behind: those of a process of this host that is gone, and any
    /// other last modified more than `older_than` ago; returns how many
    /// were removed. Give a margin (hours) so that puts still running on
    /// other hosts are not disturbed.
    pub async fn cleanup_stale_temp(&self, older_than: Duration) -> Result<usize> {
        let root = self.root.clone();
        blocking(move || {
            let cutoff = SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut removed = 0;
            for entry in walkdir::WalkDir::new(&*root).min_depth(1).follow_links(false) {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => return Err(walk_error(&root, e)),
                };
                if !entry.file_type().is_file() || !is_temp_name(entry.file_name()) {
                    continue;
                }
                let modified = entry.metadata().ok().and_then(|m| m.modified().ok());
                let name = entry.file_name().to_string_lossy();
                let leftover = coffer_core::fsutil::is_leftover_temp(&name, None, older_than)
                    || modified.is_some_and(|m| m < cutoff);
                if leftover {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(format!("removing {}", entry.path().display()), e)),
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    fn path_of(&self, key: &str) -> PathBuf {
        // `key` passed validate_key: relative, no `..`, `/`-separated.
        self.root.join(key)
    }
}

#[async_trait]
impl Sink for LocalSink {
    fn info(&self) -> SinkInfo {
        SinkInfo::new(crate::SCHEME, self.root.display().to_string()).with_atomic_create(true)
    }

    async fn put(&self, key: &str, mut body: ByteStream, opts: PutOptions) -> Result<u64> {
        validate_key(key)?;
        self.ready().await?;
        if key
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with(TEMP_PREFIX))
        {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                "object names may not start with .coffer-tmp-",
            )
            .with_context("key", key));
        }
        if !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed) {
            match self.cleanup_stale_temp(STALE_TEMP_AGE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("removed {n} stale temp file(s) of interrupted runs"),
                Err(e) => tracing::debug!("sweeping stale temp files: {e}"),
            }
        }
        let target = self.path_of(key);
        // Fail fast rather than after streaming a whole bundle; the rename
        // below is what makes create-only atomic.
        if opts.mode == PutMode::Create && tokio::fs::symlink_metadata(&target).await.is_ok() {
            return Err(LocalError::AlreadyExists { key: key.to_string() }.into());
        }

        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let job = WriteJob {
            root: self.root.clone(),
            key: key.to_string(),
            target,
            mode: opts.mode,
        };
        // If this future is dropped, `tx` is dropped with it: the writer sees
        // the channel close without `Commit` and removes its temp file.
        let writer = tokio::task::spawn_blocking(move || job.run(rx));
        let mut body_error = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if tx.send(WriteMsg::Chunk(chunk)).await.is_err() {
                        // The writer stopped on an error; it is returned below.
                        break;
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        if body_error.is_none() {
            let _ = tx.send(WriteMsg::Commit).await;
        }
        drop(tx);
        let written = writer.await.map_err(|e| {
            Error::new(ErrorKind::Unexpected, format!("the writing task failed: {e}")).set_source(e)
        })?;
        match body_error {
            // The writer has removed its temp file by now.
            Some(e) => Err(e.with_context("key", key)),
            None => {
                let n = written?;
                tracing::debug!(key, bytes = n, root = %self.root.display(), "stored object");
                Ok(n)
            }
        }
    }

    async fn open_local(&self, key: &str) -> Result<Option<File>> {
        validate_key(key)?;
        self.ready().await?;
        let path = self.path_of(key);
        blocking(move || match File::open(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("opening {}", path.display()), e)),
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        validate_key(key)?;
        self.ready().await?;
        let path = self.path_of(key);
        let key_owned = key.to_string();
        let (file, size, path) = blocking(move || {
            let not_found = |path: &Path| {
                Error::new(ErrorKind::NotFound, "object not found")
                    .with_context("key", &key_owned)
                    .with_context("path", path.display())
            };
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(&path)),
                Err(e) => {
                    return Err(
                        Error::io(format!("opening {}", path.display()), e).with_context("key", &key_owned)
                    );
                }
            };
            let meta = file
                .metadata()
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if !meta.is_file() {
                return Err(not_found(&path));
            }
            Ok((file, meta.len(), path))
        })
        .await?;

        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || read_ahead(file, size, &path, tx));
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(stream.boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.ready().await?;
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || list_blocking(&root, &prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.ready().await?;
        let path = self.path_of(key);
        let key = key.to_string();
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // A directory is where keys below `key` live, not an object.
            Err(_) if path.symlink_metadata().is_ok_and(|m| m.is_dir()) => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {}", path.display()), e).with_context("key", key)),
        })
        .await
    }

    async fn init(&self) -> Result<()> {
        let root = self.root.clone();
        blocking(move || prepare(&root, true)).await?;
        if let Some(guard) = &self.guard {
            let _ = guard.ready.set(());
        }
        Ok(())
    }
}

enum WriteMsg {
    Chunk(Bytes),
    /// The body ended: make the object durable and visible.
    Commit,
}

/// One put, as run on a blocking thread.
struct WriteJob {
    root: Arc<PathBuf>,
    key: String,
    target: PathBuf,
    mode: PutMode,
}

impl WriteJob {
    fn run(self, mut rx: mpsc::Receiver<WriteMsg>) -> Result<u64> {
        let dir = self
            .target
            .parent()
            .expect("a key path is below the root")
            .to_path_buf();
        let created = ensure_dirs(&self.root, &dir, &self.key)?;
        if self.target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            return Err(LocalError::KeyIsADirectory {
                key: self.key,
                path: self.target,
            }
            .into());
        }
        // NamedTempFile removes the file when dropped: on any error below,
        // and when the channel closes without Commit (the put was dropped).
        let temp = tempfile::Builder::new()
            .prefix(&coffer_core::fsutil::owned_temp_prefix())
            .tempfile_in(&dir)
            .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))?;
        let temp_path = temp.path().to_path_buf();
        let write_err =
            |e| Error::io(format!("writing {}", temp_path.display()), e).with_context("key", &self.key);
        let mut out = ObjectWriter::new(temp, true);
        let mut written = 0u64;
        loop {
            match rx.blocking_recv() {
                Some(WriteMsg::Chunk(chunk)) => {
                    out.write_all(&chunk).map_err(write_err)?;
                    written += chunk.len() as u64;
                }
                Some(WriteMsg::Commit) => break,
                None => {
                    return Err(LocalError::Abandoned {
                        key: self.key.clone(),
                    }
                    .into());
                }
            }
        }
        let temp = out.finish().map_err(write_err)?;
        temp.as_file().sync_all().map_err(write_err)?;
        let temp = temp.into_temp_path();

        match self.mode {
            PutMode::Create => match rename_noreplace(&temp, &self.target) {
                Ok(Placed::Renamed) => {
                    // The temp name no longer exists; nothing to remove.
                    let _ = temp.keep();
                }
                Ok(Placed::Linked) => drop(temp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(LocalError::AlreadyExists {
                        key: self.key.clone(),
                    }
                    .into());
                }
                Err(e) => {
                    return Err(Error::io(format!("renaming into {}", self.target.display()), e)
                        .with_context("key", &self.key));
                }
            },
            _ => {
                fs::rename(&temp, &self.target).map_err(|e| {
                    Error::io(format!("renaming into {}", self.target.display()), e)
                        .with_context("key", &self.key)
                })?;
                let _ = temp.keep();
            }
        }
        // Make the new name, and any directory created for it, durable.
        coffer_core::fsutil::sync_dir(&dir)?;
        for d in created.iter().rev() {
            coffer_core::fsutil::sync_dir(d)?;
        }
        Ok(written)
    }
}

/// Creates the root (if missing) and the directories from it down to
/// `dir`, mode 0700. Returns the parents of the directories it created,
/// which need an fsync once the object is in place.
fn ensure_dirs(root: &Path, dir: &Path, key: &str) -> Result<Vec<PathBuf>> {
    if fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    let mut created = Vec::new();
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(LocalError::RootNotADirectory {
                path: root.to_path_buf(),
            }
            .into());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(|e| Error::io(format!("creating the sink directory {}", root.display()), e))?;
            tracing::info!(root = %root.display(), "created the sink directory");
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                created.push(parent.to_path_buf());
            }
        }
        Err(e) => {
            return Err(Error::io(
                format!("checking the sink directory {}", root.display()),
                e,
            ));
        }
    }
    let rel = dir.strip_prefix(root).expect("dir is below root");
    let mut path = root.to_path_buf();
    for part in rel.components() {
        let parent = path.clone();
        path.push(part);
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(LocalError::ParentIsAFile {
                    key: key.to_string(),
                    path,
                }
                .into());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("checking {}", path.display()), e)),
        }
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => created.push(parent),
            // Another put created it meanwhile.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
        }
    }
    created.dedup();
    Ok(created)
}

/// How a create-only rename placed the object.
enum Placed {
    /// The temp file was renamed: it no longer exists.
    Renamed,
    /// The target is a hard link to the temp file, which is still to remove.
    Linked,
}

/// Moves `from` to `to` unless `to` exists (then `AlreadyExists`), without
/// a window in which another writer could slip in.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<Placed> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;

        let c_from = CString::new(from.as_os_str().as_bytes())?;
        let c_to = CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both are valid NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                c_from.as_ptr(),
                libc::AT_FDCWD,
                c_to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(Placed::Renamed);
        }
        let err = io::Error::last_os_error();
        // EINVAL: the filesystem does not support the flag; ENOSYS: old kernel.
        if !matches!(
            err.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        ) {
            return Err(err);
        }
    }
    link_noreplace(from, to)
}

/// The create-only fallback where `renameat2` lacks `RENAME_NOREPLACE`:
/// `link(2)` fails atomically if `to` exists.
fn link_noreplace(from: &Path, to: &Path) -> io::Result<Placed> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(Placed::Linked),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // No hard links either (FAT, some network filesystems): check, then
        // rename. Not atomic, but these filesystems offer nothing better.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::EXDEV)
            ) =>
        {
            tracing::warn!(path = %to.display(), "filesystem supports neither renameat2 nor hard links; create-only is not atomic here");
            if to.symlink_metadata().is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)?;
            Ok(Placed::Renamed)
        }
        Err(e) => Err(e),
    }
}

/// Reads `file` in chunks into `tx` until EOF or until the receiver is
/// gone; checks that exactly `size` bytes came out.
fn read_ahead(file: File, size: u64, path: &Path, tx: mpsc::Sender<Result<Bytes>>) {
    let mut file = file;
    let mut total = 0u64;
    loop {
        let mut buf = Vec::with_capacity(READ_CHUNK as usize);
        match (&mut file).take(READ_CHUNK).read_to_end(&mut buf) {
            Ok(0) => {
                if total != size {
                    let _ = tx.blocking_send(Err(LocalError::ChangedWhileReading {
                        path: path.to_path_buf(),
                        read: total,
                        expected: size,
                    }
                    .into()));
                }
                return;
            }
            Ok(n) => {
                total += n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(Error::io(format!("reading {}", path.display()), e)));
                return;
            }
        }
    }
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>> {
    // Walk only the deepest directory the prefix names.
    let start = match prefix.rfind('/') {
        Some(i) => root.join(&prefix[..i]),
        None => root.to_path_buf(),
    };
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(&start).min_depth(1).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            // A missing root or prefix directory lists as empty; a directory
            // removed while walking is skipped.
            Err(e) if is_not_found(&e) => continue,
            Err(e)
                if e.depth() == 0 && e.io_error().and_then(|e| e.raw_os_error()) == Some(libc::ENOTDIR) =>
            {
                continue;
            }
            Err(e) => return Err(walk_error(root, e)),
        };
        if !entry.file_type().is_file() || is_temp_name(entry.file_name()) {
            continue;
        }
        let rel = entry.path().strip_prefix(root).expect("walked below root");
        let Some(key) = rel.to_str().map(|s| s.to_string()) else {
            tracing::debug!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if !key.starts_with(prefix) || validate_key(&key).is_err() {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(walk_error(root, e)),
        };
        out.push(ObjectMeta {
            key,
            size: meta.len(),
            modified: meta
                .modified()
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok()),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

fn is_not_found(e: &walkdir::Error) -> bool {
    e.io_error().is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

fn walk_error(root: &Path, e: walkdir::Error) -> Error {
    let path = e.path().unwrap_or(root).display().to_string();
    match e.into_io_error() {
        Some(io) => Error::io(format!("listing {path}"), io),
        None => Error::new(ErrorKind::Unexpected, format!("listing {path}: filesystem loop")),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(ErrorKind::Unexpected, format!("a blocking task failed: {e}")).set_source(e)
    })?
}

/// Checks that `root` is a sink, or makes it one with `create`: see
/// [`LocalSink::checked`].
fn prepare(root: &Path, create: bool) -> Result<()> {
    let missing = |why: String| {
        Error::new(ErrorKind::SinkMissing, format!("no coffer sink at {}: {why}", root.display()))
            .with_context("path", root.display())
            .with_hint(format!(
                "not mounted? mount the disk and run again; to make a new sink there: `coffer sink init {}` (or `backup --create-sink`, or `create = true` in the sink's config)",
                root.display()
            ))
    };
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {
            if root.join(MARKER).is_file() || holds_snapshots(root)? {
                return Ok(());
            }
            if !create {
                return Err(missing(
                    "the directory holds no sink marker (coffer-sink.json) and no snapshot".into(),
                ));
            }
            write_marker(root)
        }
        Ok(_) => Err(missing("it is not a directory".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !create {
                return Err(missing("the directory does not exist".into()));
            }
            let parent = match root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(Error::new(
                    ErrorKind::SinkMissing,
                    format!(
                        "no coffer sink at {}: its parent {} does not exist (only the last component is created)",
                        root.display(),
                        parent.display()
                    ),
                )
                .with_context("path", root.display())
                .with_hint(format!(
                    "not mounted? mount the disk that holds {} and run again; a new location's parent is made \
                     by hand first (mkdir -p {}), so a run against an unmounted disk never writes elsewhere",
                    parent.display(),
                    parent.display()
                )));
            }
            // Made under a temp name with its marker inside, then renamed:
            // a run killed half-way leaves no directory without a marker.
            let io = |e| Error::io(format!("creating the sink directory {}", root.display()), e);
            let temp = tempfile::Builder::new()
                .prefix(&coffer_core::fsutil::owned_temp_prefix())
                .permissions(fs::Permissions::from_mode(0o700))
                .tempdir_in(&parent)
                .map_err(io)?;
            write_marker(temp.path())?;
            match rename_noreplace(temp.path(), root) {
                Ok(_) => {
                    // Renamed: nothing left to remove.
                    let _ = temp.keep();
                    coffer_core::fsutil::sync_dir(&parent)
                }
                // Made meanwhile by another run: check it as it is.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => prepare(root, false),
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(Error::io(format!("cannot stat the sink {}", root.display()), e)),
    }
}

/// Whether `root` holds snapshots or locks of coffer: a sink made before
/// the marker existed.
fn holds_snapshots(root: &Path) -> Result<bool> {
    let entries =
        fs::read_dir(root).map_err(|e| Error::io(format!("cannot list the sink {}", root.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let id = name
            .strip_suffix(coffer_core::format::OBJECT_SUFFIX)
            .or_else(|| name.strip_suffix(coffer_core::format::INDEX_SUFFIX));
        if name == "locks" || id.is_some_and(|id| id.parse::<coffer_core::format::SnapshotId>().is_ok()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes the marker atomically (temp file, fsync, rename, fsync the
/// directory).
fn write_marker(root: &Path) -> Result<()> {
    let text = format!(
        "{{\n  \"format\": \"coffer-sink/1\",\n  \"created\": \"{}\",\n  \"created_by\": \"coffer {}\"\n}}\n",
        jiff::Timestamp::now(),
        env!("CARGO_PKG_VERSION")
    );
    let io = |e| Error::io(format!("writing the sink marker in {}", root.display()), e);
    let mut temp = tempfile::Builder::new()
        .prefix(&coffer_core::fsutil::owned_temp_prefix())
        .tempfile_in(root)
        .map_err(io)?;
    temp.write_all(text.as_bytes()).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(root.join(MARKER)).map_err(|e| io(e.error))?;
    coffer_core::fsutil::sync_dir(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_only_fallbacks_never_replace() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("tmp"), dir.path().join("obj"));
        fs::write(&from, "new").unwrap();
        fs::write(&to, "old").unwrap();
        for f in [rename_noreplace, link_noreplace] {
            assert_eq!(
                f(&from, &to).err().map(|e| e.kind()),
                Some(io::ErrorKind::AlreadyExists)
            );
            assert_eq!(fs::read_to_string(&to).unwrap(), "old");
        }
        fs::remove_file(&to).unwrap();
        assert!(matches!(link_noreplace(&from, &to), Ok(Placed::Linked)));
        assert_eq!(fs::read_to_string(&to).unwrap(), "new");
        fs::remove_file(&to).unwrap();
        assert!(matches!(rename_noreplace(&from, &to), Ok(Placed::Renamed)));
        assert!(!from.exists());
        assert_eq!(fs::read_to_string(&to).unwrap(), "new");
    }
}
