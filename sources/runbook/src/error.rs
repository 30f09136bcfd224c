//! The importer's errors: a damaged or altered runbook backup.
use std::io;
use std::path::Path;

use coffer_core::{Error, ErrorKind};

pub(crate) fn damaged(what: impl Into<String>, file: &Path) -> Error {
    Error::new(ErrorKind::Integrity, what.into())
        .with_context("file", file.display().to_string())
        .with_hint("the runbook backup is damaged or was altered; use another copy (nothing was imported)")
}

/// Maps an error while reading the decrypted stream: age reports a
/// failed authentication as an I/O error.
pub(crate) fn stream_error(e: io::Error, file: &Path) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => damaged("the encrypted file is truncated", file),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other => {
            damaged(format!("cannot read the encrypted tar.gz: {e}"), file)
        }
        _ => Error::io(format!("cannot read {}", file.display()), e),
    }
}
