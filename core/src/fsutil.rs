//! Filesystem helpers shared by the plugins that write local files (the
//! local sink, file and env restores): temp-file naming, directory fsync,
//! and the writability preflight of a restore destination; and
//! [`read_up_to`], for readers that hand out fewer bytes than asked.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Name prefix of every file coffer writes before renaming it into place;
/// listings skip such names and an abort or a later run removes them.
pub const TEMP_PREFIX: &str = ".coffer-tmp-";

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
