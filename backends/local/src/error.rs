//! Errors specific to the local sink, converted into coffer's error.

use std::path::PathBuf;

use coffer_core::{Error, ErrorKind};

/// What can go wrong in this crate beyond plain I/O (which is converted
/// with [`Error::io`] where it happens).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalError {
    #[error("invalid file URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("invalid local sink config for `{name}`: {message}")]
    InvalidConfig { name: String, message: String },
    #[error("the sink directory {} exists but is not a directory", path.display())]
    RootNotADirectory { path: PathBuf },
    #[error("cannot store `{key}`: {} is a file, not a directory", path.display())]
    ParentIsAFile { key: String, path: PathBuf },
    #[error("cannot store `{key}`: {} is a directory", path.display())]
    KeyIsADirectory { key: String, path: PathBuf },
    #[error("object `{key}` already exists")]
    AlreadyExists { key: String },
    #[error("the put of `{key}` was abandoned before its body ended")]
    Abandoned { key: String },
    #[error("{} changed while being read ({read} bytes read, {expected} expected)", path.display())]
    ChangedWhileReading { path: PathBuf, read: u64, expected: u64 },
}

impl From<LocalError> for Error {
    fn from(err: LocalError) -> Self {
        let message = err.to_string();
        match err {
            LocalError::InvalidUrl { url, .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_context("url", url)
                .with_hint("write file:///absolute/path, file:relative/path or a plain path"),
            LocalError::InvalidConfig { .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_hint("a local sink takes one key: path = \"/srv/backups\""),
            LocalError::RootNotADirectory { .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_hint("point the sink at a directory, or remove that file"),
            LocalError::ParentIsAFile { key, .. } => Error::new(ErrorKind::Unsupported, message)
                .with_context("key", key)
                .with_hint("the local sink cannot hold both an object and keys below it; use another key"),
            LocalError::KeyIsADirectory { key, .. } => Error::new(ErrorKind::Unsupported, message)
                .with_context("key", key)
                .with_hint("the local sink cannot hold both an object and keys below it; use another key"),
            LocalError::AlreadyExists { key } => {
                Error::new(ErrorKind::AlreadyExists, message).with_context("key", key)
            }
            LocalError::Abandoned { key } => {
                Error::new(ErrorKind::Cancelled, message).with_context("key", key)
            }
            LocalError::ChangedWhileReading { .. } => Error::new(ErrorKind::Integrity, message)
                .with_hint("another program modified the object; check the sink directory"),
        }
    }
}
