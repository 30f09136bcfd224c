//! Errors specific to the media sink, converted into coffer's error.

use std::path::PathBuf;

use coffer_core::{Error, ErrorKind};

use crate::identity::IDENTITY_FILE;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MediaError {
    #[error("invalid media URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid media sink config for `{name}`: {message}")]
    InvalidConfig { name: String, message: String },
    #[error("the medium {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} is not a mount point: it is on the same filesystem as its parent directory, so the medium is not mounted there",
        path.display()
    )]
    NotMounted { path: PathBuf },
    #[error("{} holds no {IDENTITY_FILE}: it is not an initialized coffer medium", path.display())]
    NoIdentity { path: PathBuf },
    #[error("{} has an unreadable {IDENTITY_FILE}: {message}", path.display())]
    BadIdentity { path: PathBuf, message: String },
    #[error("the medium at {} is {found}, which this sink does not accept (accepted: {accepted})", path.display())]
    WrongMedium {
        path: PathBuf,
        found: String,
        accepted: String,
    },
    #[error(
        "not enough space on the medium {}: {needed} bytes needed ({object} for the object + {margin} margin), {free} bytes free",
        path.display()
    )]
    NoSpace {
        path: PathBuf,
        needed: u64,
        object: u64,
        margin: u64,
        free: u64,
    },
    #[error("the medium {} is already initialized as {label}", path.display())]
    AlreadyInitialized { path: PathBuf, label: String },
    #[error("reading `{key}` back from the medium gave different bytes than were written ({detail})")]
    ReadBack { key: String, detail: String },
}

/// Human size for messages, e.g. `12.3 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    coffer_core::human_size(bytes)
}

impl From<MediaError> for Error {
    fn from(err: MediaError) -> Self {
        let message = err.to_string();
        match err {
            MediaError::InvalidUrl { url, .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_context("url", url)
                .with_hint("write media:/mnt/usb?labels=OFFSITE-A,OFFSITE-B or media:/mnt/usb?set=weekly"),
            MediaError::InvalidConfig { .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_hint("a media sink takes: path = \"/mnt/usb\", labels = [\"OFFSITE-A\"], set = \"weekly\""),
            MediaError::Missing { path } => Error::new(ErrorKind::Unreachable, message)
                .with_context("path", path.display())
                .with_hint("plug the medium in and mount it there (e.g. `mount /dev/sdb1 PATH`)"),
            MediaError::NotADirectory { path } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_context("path", path.display())
                .with_hint("give the directory the medium is mounted on"),
            MediaError::NotMounted { path } => Error::new(ErrorKind::Unreachable, message)
                .with_context("path", path.display())
                .with_hint("writing there would fill the host's own disk; plug the medium in and mount it (e.g. `mount /dev/sdb1 PATH`), then run again — `findmnt PATH` shows what is mounted"),
            MediaError::NoIdentity { path } => Error::new(ErrorKind::NotFound, message)
                .with_context("path", path.display())
                .with_hint("initialize it once with `coffer media init PATH --label NAME [--set SET]`, or check that the right medium is mounted"),
            MediaError::BadIdentity { path, .. } => Error::new(ErrorKind::Integrity, message)
                .with_context("path", path.display())
                .with_hint("the medium's identity file is damaged; check the medium, or re-initialize it after saving its snapshots"),
            MediaError::WrongMedium { path, .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_context("path", path.display())
                .with_hint("plug in a medium of the right rotation (`coffer media status PATH` shows its label and set), or change the sink's labels/set"),
            MediaError::NoSpace { path, needed, free, .. } => Error::new(ErrorKind::StorageFull, message)
                .with_context("path", path.display())
                .with_hint(format!(
                    "{} needed, {} free: use a larger medium, or free space on it (e.g. `coffer prune --sink media:{}`)",
                    human(needed),
                    human(free),
                    path.display()
                )),
            MediaError::AlreadyInitialized { path, .. } => Error::new(ErrorKind::AlreadyExists, message)
                .with_context("path", path.display())
                .with_hint("`coffer media status PATH` shows it; an initialized medium keeps its identity"),
            MediaError::ReadBack { key, .. } => Error::new(ErrorKind::Integrity, message)
                .with_context("key", key)
                .with_hint("the medium may be failing (or its write cache lied); the object was removed — try again, or use another medium"),
        }
    }
}
