//! [`MediaSink`]: a [`LocalSink`] on a removable medium, with the checks
//! that catch the classic media disasters.
//!
//! Every operation first checks that the path is a mount point and that
//! the medium's identity is accepted (blocking `stat`/`read` of a small
//! file, in `spawn_blocking`). A put also checks free space against its
//! size hint, hashes the body as it passes to the local sink (which writes
//! on its own blocking thread: temp file, fsync, rename, directory fsync),
//! and then reads the whole object back from the medium on a blocking
//! thread — after asking the kernel to drop its cached pages, so the bytes
//! come from the device — and compares the SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use coffer_core::{
    ByteStream, Error, ErrorKind, ObjectMeta, PutOptions, Result, Sink, SinkInfo, SinkSettings,
    ops::LOCK_PREFIX, validate_key,
};
use coffer_sink_local::LocalSink;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::config::MediaSinkConfig;
use crate::error::MediaError;
use crate::identity::{MediaIdentity, check_mounted, free_space, read_identity, space_margin};

/// A sink on a removable medium mounted at a directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaSink {
    config: Arc<MediaSinkConfig>,
    inner: LocalSink,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(ErrorKind::Unexpected, format!("a blocking task failed: {e}")).set_source(e)
    })?
}

impl MediaSink {
    /// A sink for the medium `config` describes. Nothing is checked until
    /// the first operation.
    pub fn new(config: MediaSinkConfig) -> Self {
        let inner = LocalSink::new(config.path.clone());
        MediaSink {
            config: Arc::new(config),
            inner,
        }
    }

    /// A sink from `media:PATH?labels=…&set=…`.
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::new(MediaSinkConfig::from_url(url)?))
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.config.path
    }

    /// The settings.
    pub fn config(&self) -> &MediaSinkConfig {
        &self.config
    }

    /// Checks that the medium is mounted and accepted; returns its identity.
    pub async fn check_medium(&self) -> Result<MediaIdentity> {
        let config = self.config.clone();
        blocking(move || {
            check_mounted(&config.path)?;
            let id = read_identity(&config.path)?;
            if !config.accepts(&id) {
                return Err(MediaError::WrongMedium {
                    path: config.path.clone(),
                    found: id.describe(),
                    accepted: config.describe_accepted(),
                }
                .into());
            }
            Ok(id)
        })
        .await
    }

    /// The size of the largest snapshot object on the medium, if any.
    async fn largest_snapshot(&self) -> Result<Option<u64>> {
        let objects = self.inner.list("").await?;
        Ok(objects
            .iter()
            .filter(|o| o.key.ends_with(coffer_core::format::OBJECT_SUFFIX))
            .map(|o| o.size)
            .max())
    }

    /// Refuses before writing when the medium lacks `size` bytes plus the
    /// margin ([`crate::space_margin`]).
    pub async fn check_space(&self, size: Option<u64>) -> Result<()> {
        let root = self.config.path.clone();
        let object = size.unwrap_or(0);
        blocking(move || {
            let free = free_space(&root)?;
            let margin = space_margin(object);
            let needed = object.saturating_add(margin);
            if free < needed {
                return Err(MediaError::NoSpace {
                    path: root,
                    needed,
                    object,
                    margin,
                    free,
                }
                .into());
            }
            Ok(())
        })
        .await
    }
}

/// Reads `path` back from the device (its cached pages dropped first) and
/// returns its SHA-256 and size.
fn read_back(path: &Path) -> Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::io(format!("reading back {}", path.display()), e))?;
    {
        use std::os::fd::AsRawFd;
        // The data was fsynced by the put, so its pages are clean and the
        // kernel may drop them: the read below then comes from the medium.
        // Advisory; tmpfs and some filesystems ignore it.
        // SAFETY: a valid open fd; offset 0, len 0 = whole file.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading back {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn is_lock(key: &str) -> bool {
    key.starts_with(LOCK_PREFIX)
}

#[async_trait]
impl Sink for MediaSink {
    fn info(&self) -> SinkInfo {
        SinkInfo::new(crate::SCHEME, self.config.path.display().to_string()).with_atomic_create(true)
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        validate_key(key)?;
        self.check_medium().await?;
        if is_lock(key) {
            // Rewritten every minute and worthless once released: no
            // read-back, no space preflight (a few hundred bytes).
            return self.inner.put(key, body, opts).await;
        }
        // A backup streams straight to the medium and cannot know its size
        // yet: the largest snapshot already on the medium is the estimate.
        let hint = match opts.size_hint {
            Some(size) => Some(size),
            None if key.ends_with(coffer_core::format::OBJECT_SUFFIX) => self.largest_snapshot().await?,
            None => None,
        };
        self.check_space(hint).await?;
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let h = hasher.clone();
        let body = body
            .map(move |item| {
                if let Ok(chunk) = &item {
                    h.lock().unwrap_or_else(|p| p.into_inner()).update(chunk);
                }
                item
            })
            .boxed();
        let written = self.inner.put(key, body, opts).await?;
        let expected = {
            let mut g = hasher.lock().unwrap_or_else(|p| p.into_inner());
            hex::encode(std::mem::take(&mut *g).finalize())
        };
        let path: PathBuf = self.config.path.join(key);
        let (actual, size) = blocking(move || read_back(&path)).await?;
        if actual != expected || size != written {
            let detail = if size != written {
                format!("{size} bytes read, {written} written")
            } else {
                format!("SHA-256 {actual}, expected {expected}")
            };
            if let Err(e) = self.inner.delete(key).await {
                tracing::warn!("removing the unreadable object {key}: {e}");
            }
            return Err(MediaError::ReadBack {
                key: key.to_string(),
                detail,
            }
            .into());
        }
        tracing::debug!(key, bytes = written, "written and read back from the medium");
        Ok(written)
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        validate_key(key)?;
        self.check_medium().await?;
        self.inner.get(key).await
    }

    async fn open_local(&self, key: &str) -> Result<Option<std::fs::File>> {
        validate_key(key)?;
        self.check_medium().await?;
        self.inner.open_local(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.check_medium().await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.check_medium().await?;
        self.inner.delete(key).await
    }
}
