//! The env source's errors, with what to do about them.
use std::io;
use std::path::Path;

use coffer_core::Error;

pub(crate) fn read_error(path: &Path, err: io::Error) -> Error {
    let hint = match err.kind() {
        io::ErrorKind::NotFound => Some("check the source's `path`"),
        io::ErrorKind::PermissionDenied => Some("run coffer as a user that can read the .env file"),
        _ => None,
    };
    let e = Error::io(format!("cannot read {}", path.display()), err).with_context("path", path.display());
    match hint {
        Some(h) => e.with_hint(h),
        None => e,
    }
}
