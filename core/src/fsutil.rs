//! Filesystem helpers shared by the plugins that write local files (the
//! local sink, file and env restores): temp-file naming, directory fsync,
//! and the writability preflight of a restore destination; and
//! [`read_up_to`], for readers that hand out fewer bytes than asked.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Name prefix of every file coffer writes before renaming it into place;
/// listings skip such names and an abort or a later run removes them.
pub const TEMP_PREFIX: &str = ".coffer-tmp-";

/// Temp files of older versions (no owner in the name) older than this are
/// leftovers: nothing stages a file that long.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The boot and PID namespace of this process (`<boot_id>/<pid:[…]>`),
/// where the kernel tells them: processes with equal scopes on one host
/// see each other's PIDs.
pub fn process_scope() -> Option<String> {
    static SCOPE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SCOPE
        .get_or_init(|| {
            let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            let ns = fs::read_link("/proc/self/ns/pid").ok()?;
            Some(format!("{}/{}", boot.trim(), ns.display()))
        })
        .clone()
}

/// Whether no process has `pid` (in this PID namespace). A PID that exists
/// (or cannot be checked) counts as alive.
pub fn pid_is_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Eight hex digits naming this host, boot and PID namespace in temp names
/// (worked out once: a restore asks for every file it stages).
fn owner_tag() -> Option<String> {
    static TAG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        use sha2::Digest;
        let scope = process_scope()?;
        let digest = sha2::Sha256::digest(format!("{}\n{scope}", crate::bundle::hostname()));
        Some(hex::encode(&digest[..4]))
    })
    .clone()
}

/// The prefix of this process's temp files: `.coffer-tmp-<tag>-<pid>-`, so
/// a later run on the same host can tell a leftover of a killed process
/// (its PID is gone) from a file another run is still writing.
pub fn owned_temp_prefix() -> String {
    match owner_tag() {
        Some(tag) => format!("{TEMP_PREFIX}{tag}-{}-", std::process::id()),
        None => TEMP_PREFIX.to_string(),
    }
}

/// Whether a temp file (or object) named `name` is a leftover: written by a
/// process of this host that is gone, or, for names without an owner
/// (older versions, other hosts), last changed longer than `age` ago.
/// `changed` is its last status change (or modification) time, if known.
pub fn is_leftover_temp(
    name: &str,
    changed: Option<std::time::SystemTime>,
    age: std::time::Duration,
) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    let mut parts = rest.splitn(3, '-');
    if let (Some(tag), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next())
        && tag.len() == 8
        && let Ok(pid) = pid.parse::<u32>()
        && owner_tag().as_deref() == Some(tag)
        && pid != std::process::id()
    {
        return pid_is_gone(pid);
    }
    changed
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Removes the leftover temp files ([`is_leftover_temp`]) directly in
/// `dir` (not below it; a leftover temp *directory*, a restore's staged
/// root, goes whole), returning their paths; with `dry_run`, only lists
/// them. Symlinks are removed as links, never followed.
pub fn sweep_leftover_temps(dir: &Path, dry_run: bool) -> Result<Vec<std::path::PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with(TEMP_PREFIX)) else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let changed =
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(meta.ctime().max(0) as u64));
        if !is_leftover_temp(name, changed, STALE_TEMP_AGE) {
            continue;
        }
        if !dry_run {
            // A directory: a restore's staged root (or a sink being made),
            // removed whole.
            let gone = if meta.is_dir() {
                fs::remove_dir_all(entry.path())
            } else {
                fs::remove_file(entry.path())
            };
            match gone {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("removing {}", entry.path().display()), e)),
            }
        }
        removed.push(entry.path());
    }
    Ok(removed)
}

/// fsyncs a directory so the renames in it are durable. Filesystems that
/// refuse fsync on directories (FUSE, CIFS, vfat) are accepted: their
/// renames are as durable as they can be.
pub fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported) => Ok(()),
        Err(e) => Err(Error::io(format!("syncing the directory {}", dir.display()), e)),
    }
}

/// Makes everything written to the filesystems holding `dirs` durable: one
/// `syncfs` per filesystem (as `tar x && sync` does), instead of one fsync
/// per file, which costs milliseconds each on small files. `dirs` must be
/// existing directories.
pub fn sync_filesystems<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let mut done = std::collections::BTreeSet::new();
    for dir in dirs {
        let file = File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
        let dev = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", dir.display()), e))?
            .dev();
        if !done.insert(dev) {
            continue;
        }
        // SAFETY: `file` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
            return Err(Error::io(
                format!("syncing the filesystem of {}", dir.display()),
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Checks, before a restore reads any entry, that `path` (or its nearest
/// existing ancestor) is a directory this process can write; returns
/// whether `path` itself exists.
pub fn check_writable_dir(path: &Path) -> Result<bool> {
    let mut dir = path;
    loop {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(
                    Error::new(ErrorKind::AlreadyExists, "restore destination is not a directory")
                        .with_context("path", dir.display())
                        .with_hint("choose a directory with --target"),
                );
            }
            // A missing path, or one below a regular file: look further up.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                match dir.parent() {
                    Some(p) => dir = p,
                    None => break,
                }
            }
            Err(e) => return Err(Error::io(format!("cannot stat {}", dir.display()), e)),
        }
    }
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::new(ErrorKind::ConfigInvalid, "path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(Error::io(
            format!("cannot write to {}", dir.display()),
            io::Error::last_os_error(),
        )
        .with_context("path", dir.display())
        .with_hint("run the restore as a user that can write there, or choose another --target"));
    }
    Ok(dir == path)
}

/// Fills `buf` as far as the reader allows (a stream may hand out fewer
/// bytes per `read` than asked); returns the bytes read, fewer only at the
/// end of the stream.
pub fn read_up_to(r: &mut (impl std::io::Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A file staged next to its destination by [`stage_file`]: a hidden
/// `.coffer-tmp-*` temp file, complete and fsynced, removed when dropped
/// unless [`StagedFile::commit`] renamed it into place.
#[derive(Debug)]
pub struct StagedFile {
    temp: tempfile::TempPath,
    dest: PathBuf,
    existed: bool,
}

impl StagedFile {
    /// Where it goes.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Whether a regular file was at the destination when it was staged.
    pub fn replaces(&self) -> bool {
        self.existed
    }

    /// Renames it into place and syncs the directory.
    pub fn commit(self) -> Result<()> {
        let dest = self.dest;
        self.temp
            .persist(&dest)
            .map_err(|e| Error::io(format!("cannot put {} in place", dest.display()), e.error))?;
        match dest.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// Stages exactly `size` bytes of `reader` for `dest` with `mode`: created
/// 0600 (a secret is never readable by others, even for a moment), written,
/// given its mode and fsynced. Missing parent directories are created and
/// pushed to `created` (remove them with [`remove_created`] on abort).
/// Refuses a destination that exists and is not a regular file; a reader
/// yielding fewer bytes is an integrity failure.
pub fn stage_file(
    dest: &Path,
    reader: &mut dyn std::io::Read,
    size: u64,
    mode: u32,
    created: &mut Vec<PathBuf>,
) -> Result<StagedFile> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let existed = match fs::symlink_metadata(dest) {
        Ok(m) if m.is_file() => true,
        Ok(_) => {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "the destination is not a regular file")
                    .with_context("path", dest.display())
                    .with_hint("move it away, or restore with another --target"),
            );
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound) => false,
        Err(e) => return Err(Error::io(format!("cannot inspect {}", dest.display()), e)),
    };
    let io = |e| Error::io(format!("cannot stage {}", dest.display()), e);
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let mut missing = Vec::new();
    let mut d = dir;
    while fs::symlink_metadata(d).is_err() {
        missing.push(d.to_path_buf());
        d = d.parent().unwrap_or(Path::new("/"));
    }
    for d in missing.into_iter().rev() {
        fs::create_dir(&d).map_err(io)?;
        created.push(d);
    }
    let mut temp = tempfile::Builder::new()
        .prefix(&owned_temp_prefix())
        .rand_bytes(12)
        .tempfile_in(dir)
        .map_err(io)?;
    let copied = io::copy(&mut reader.take(size), temp.as_file_mut()).map_err(io)?;
    if copied != size {
        return Err(
            Error::new(ErrorKind::Integrity, "an entry is shorter than its header says")
                .with_context("path", dest.display())
                .with_hint("the bundle is malformed or forged; do not restore it"),
        );
    }
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    Ok(StagedFile {
        temp: temp.into_temp_path(),
        dest: dest.to_path_buf(),
        existed,
    })
}

/// Removes the directories [`stage_file`] created, newest first (those
/// still empty).
pub fn remove_created(created: &mut Vec<PathBuf>) {
    for dir in std::mem::take(created).into_iter().rev() {
        let _ = fs::remove_dir(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_checks() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_writable_dir(d.path()).unwrap());
        assert!(!check_writable_dir(&d.path().join("new/deeper")).unwrap());
        std::fs::write(d.path().join("f"), "x").unwrap();
        let err = check_writable_dir(&d.path().join("f/sub")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        sync_dir(d.path()).unwrap();
    }
}
