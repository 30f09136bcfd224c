//! The file source's errors, with what to do about them.
use std::io;
use std::path::Path;

use coffer_core::{Error, ErrorKind};

pub(crate) fn read_error(path: &Path, err: io::Error) -> Error {
    let denied = err.kind() == io::ErrorKind::PermissionDenied;
    let not_found = err.kind() == io::ErrorKind::NotFound;
    let e = Error::io(format!("cannot read {}", path.display()), err).with_context("path", path.display());
    if denied {
        e.with_hint(
            "run coffer as a user that can read every file of the source, or add the path to its `exclude` patterns",
        )
    } else if not_found {
        e.with_hint("check the source's `path`")
    } else {
        e
    }
}

pub(crate) fn not_file_or_dir(path: &Path) -> Error {
    Error::new(ErrorKind::Unsupported, "not a regular file or a directory")
        .with_context("path", path.display())
        .with_hint("a `file` source backs up a regular file or a directory tree")
}
