//! The medium itself: its identity file `coffer-media.json`, whether it is
//! mounted, and its free space. All of it is blocking filesystem work,
//! called through `spawn_blocking` by the sink.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use coffer_core::{Error, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::MediaError;

/// Name of the identity file at the medium's root.
pub const IDENTITY_FILE: &str = "coffer-media.json";
/// Format tag of the identity file.
pub const IDENTITY_FORMAT: &str = "coffer-media/1";

/// What `coffer media init` writes on a medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct MediaIdentity {
    /// [`IDENTITY_FORMAT`].
    pub format: String,
    /// The label written on the disk, e.g. `OFFSITE-A`.
    pub label: String,
    /// A random id, unique per medium (two disks with one label differ).
    pub media_id: String,
    /// The rotation set, e.g. `weekly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// When it was initialized.
    pub created_at: Timestamp,
    /// The coffer version that initialized it.
    pub coffer_version: String,
}

impl MediaIdentity {
    /// A new identity for a medium labelled `label`, in rotation set `set`.
    pub fn new(label: &str, set: Option<&str>) -> Result<Self> {
        check_name("label", label)?;
        if let Some(s) = set {
            check_name("set", s)?;
        }
        Ok(MediaIdentity {
            format: IDENTITY_FORMAT.into(),
            label: label.to_string(),
            media_id: format!("{:016x}", rand::random::<u64>()),
            set: set.map(str::to_string),
            created_at: Timestamp::now(),
            coffer_version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    /// `label OFFSITE-A (set weekly)`, for messages.
    pub fn describe(&self) -> String {
        match &self.set {
            Some(s) => format!("label {} (set {s})", self.label),
            None => format!("label {} (no set)", self.label),
        }
    }

    /// Pretty JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("identity serializes");
        v.push(b'\n');
        v
    }
}

/// Labels and sets are printed on disks and typed in URLs: keep them plain.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(
            coffer_core::config_error(format!("invalid media {what} `{name}`"))
                .with_hint("use up to 64 letters, digits, '.', '_' and '-'"),
        )
    }
}

/// Checks that `path` is a directory on another filesystem than its
/// parent: a mounted medium, not the empty mount point of an unplugged one.
pub fn check_mounted(path: &Path) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MediaError::Missing {
                path: path.to_path_buf(),
            }
            .into());
        }
        Err(e) => return Err(Error::io(format!("checking the medium {}", path.display()), e)),
    };
    if !meta.is_dir() {
        return Err(MediaError::NotADirectory {
            path: path.to_path_buf(),
        }
        .into());
    }
    let parent = std::fs::metadata(path.join(".."))
        .map_err(|e| Error::io(format!("checking the parent of {}", path.display()), e))?;
    // `/` is its own parent: it is the host's disk, never a medium.
    if meta.dev() == parent.dev() {
        return Err(MediaError::NotMounted {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(())
}

/// Reads the identity file of the medium at `root`.
pub fn read_identity(root: &Path) -> Result<MediaIdentity> {
    let file = root.join(IDENTITY_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MediaError::NoIdentity {
                path: root.to_path_buf(),
            }
            .into());
        }
        Err(e) => return Err(Error::io(format!("reading {}", file.display()), e)),
    };
    let id: MediaIdentity = serde_json::from_slice(&bytes).map_err(|e| MediaError::BadIdentity {
        path: root.to_path_buf(),
        message: e.to_string(),
    })?;
    if id.format != IDENTITY_FORMAT {
        return Err(MediaError::BadIdentity {
            path: root.to_path_buf(),
            message: format!("unknown format `{}`", id.format),
        }
        .into());
    }
    Ok(id)
}

/// Bytes available to this process on the filesystem of `path` (statvfs).
pub fn free_space(path: &Path) -> Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| coffer_core::config_error("path contains a NUL byte"))?;
    // SAFETY: statvfs is plain data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(
            format!("reading the free space of {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Total size of the filesystem of `path` (statvfs).
pub(crate) fn total_space(path: &Path) -> Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| coffer_core::config_error("path contains a NUL byte"))?;
    // SAFETY: as in `free_space`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as in `free_space`.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(
            format!("reading the size of {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}

/// Space kept free beyond an object's size: filesystem overhead of the
/// temp file and directory entries, and the small objects written after it.
pub fn space_margin(size: u64) -> u64 {
    4 * 1024 * 1024 + size / 100
}

/// Writes a new identity on the mounted medium at `root` (temp file,
/// fsync, rename, directory fsync); refuses an already initialized one.
pub fn init_medium(root: &Path, label: &str, set: Option<&str>) -> Result<MediaIdentity> {
    check_mounted(root)?;
    match read_identity(root) {
        Ok(existing) => {
            return Err(MediaError::AlreadyInitialized {
                path: root.to_path_buf(),
                label: existing.describe(),
            }
            .into());
        }
        Err(e) if e.kind() == coffer_core::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let identity = MediaIdentity::new(label, set)?;
    let temp = root.join(format!(
        "{}{:016x}",
        coffer_core::fsutil::TEMP_PREFIX,
        rand::random::<u64>()
    ));
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create_new(&temp)?;
        f.write_all(&identity.to_json())?;
        f.sync_all()?;
        // Create-only: a concurrent init of the same medium loses.
        std::fs::hard_link(&temp, root.join(IDENTITY_FILE))?;
        Ok(())
    };
    let r = write();
    let _ = std::fs::remove_file(&temp);
    r.map_err(|e| Error::io(format!("writing {}", root.join(IDENTITY_FILE).display()), e))?;
    coffer_core::fsutil::sync_dir(root)?;
    Ok(identity)
}

/// What `coffer media status` shows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MediaStatus {
    /// The mount point.
    pub path: PathBuf,
    /// The identity file.
    pub identity: MediaIdentity,
    /// Bytes free.
    pub free: u64,
    /// Filesystem size.
    pub total: u64,
}

/// Mount check, identity and space of the medium at `root`.
pub fn media_status(root: &Path) -> Result<MediaStatus> {
    check_mounted(root)?;
    Ok(MediaStatus {
        path: root.to_path_buf(),
        identity: read_identity(root)?,
        free: free_space(root)?,
        total: total_space(root)?,
    })
}
