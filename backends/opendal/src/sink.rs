//! [`OpendalSink`]: a [`Sink`] over an OpenDAL [`Operator`].

use async_trait::async_trait;
use coffer_core::{
    ByteStream, Error, ErrorKind, ObjectMeta, PutMode, PutOptions, Result, Sink, SinkInfo, validate_key,
    validate_prefix,
};
use futures::{StreamExt, TryStreamExt};
use opendal::Operator;

use crate::config::OpendalSinkConfig;
use crate::error::{already_exists, map_error};

/// Renames of a staged put tried again after a temporary failure.
const RENAME_RETRIES: u64 = 3;
/// Where puts are staged on services that can rename; never listed.
const TMP_DIR: &str = ".coffer-tmp/";

/// A sink over any OpenDAL service. Cheap to clone.
#[derive(Clone)]
pub struct OpendalSink {
    op: Operator,
    location: String,
    part_size: usize,
    concurrency: usize,
    /// For a remote service, the longest one operation may take (see
    /// `SinkInfo::remote_bound`); `None` for `fs` and `memory`.
    remote_bound: Option<std::time::Duration>,
}

impl std::fmt::Debug for OpendalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpendalSink")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl OpendalSink {
    /// Builds the operator of `config` (contacts nothing yet).
    pub fn new(config: &OpendalSinkConfig) -> Result<Self> {
        let options = config.resolved_options()?;
        let op = build_operator(&config.scheme, options).map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "cannot set up the OpenDAL `{}` service: {}",
                    config.scheme,
                    e.kind()
                ),
            )
            .with_context("sink", config.location())
            .with_hint(
                "check the scheme (is it compiled in? see the coffer-sink-opendal features) \
                 and the service's options in the OpenDAL docs",
            )
        })?;
        Ok(OpendalSink {
            op,
            location: config.location(),
            part_size: (config.part_size_mib as usize) << 20,
            concurrency: config.concurrency,
            remote_bound: (!matches!(config.scheme.as_str(), "fs" | "memory")).then(|| {
                std::time::Duration::from_secs(config.timeout_secs.saturating_mul(2).saturating_add(30))
            }),
        })
    }

    /// A sink over an operator a program already has.
    pub fn from_operator(op: Operator, location: impl Into<String>) -> Self {
        OpendalSink {
            op,
            location: location.into(),
            part_size: 8 << 20,
            concurrency: 4,
            remote_bound: None,
        }
    }

    /// The operator.
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    fn err(&self, op: &str, key: &str, e: opendal::Error) -> Error {
        map_error(&self.location, op, key, e)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.op.stat(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    /// Writes `body` to `path`, closing the writer only when the body ended
    /// cleanly and aborting it otherwise.
    async fn write(&self, path: &str, key: &str, mut body: ByteStream, if_not_exists: bool) -> Result<u64> {
        let cap = self.op.info().capability();
        let mut w = self.op.writer_with(path);
        if cap.write_can_multi {
            w = w.chunk(self.part_size).concurrent(self.concurrency);
        }
        if if_not_exists {
            w = w.if_not_exists(true);
        }
        let mut writer = w.await.map_err(|e| self.err("opening a writer", key, e))?;
        let mut total = 0u64;
        let outcome: Result<()> = async {
            if !cap.write_can_multi {
                // One request for the whole object (webdav in OpenDAL
                // 0.59): the body is held in memory, without copies.
                let mut chunks: Vec<bytes::Bytes> = Vec::new();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    total += chunk.len() as u64;
                    chunks.push(chunk);
                }
                writer
                    .write(opendal::Buffer::from(chunks))
                    .await
                    .map_err(|e| self.err("write", key, e))?;
            }
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                writer.write(chunk).await.map_err(|e| self.err("write", key, e))?;
            }
            writer
                .close()
                .await
                .map_err(|e| self.err("closing the writer", key, e))?;
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            if let Err(abort) = writer.abort().await {
                tracing::debug!(%key, error = %abort, "aborting an OpenDAL writer failed");
            }
            return Err(e);
        }
        Ok(total)
    }
}

/// Deletes a staged temporary object unless disarmed (also when the put
/// is dropped).
struct TmpGuard {
    op: Option<Operator>,
    path: String,
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(op) = self.op.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let path = std::mem::take(&mut self.path);
            handle.spawn(async move {
                let _ = op.delete(&path).await;
            });
        }
    }
}

#[async_trait]
impl Sink for OpendalSink {
    fn info(&self) -> SinkInfo {
        let cap = self.op.info().capability();
        let info = SinkInfo::new(crate::KIND, self.location.clone())
            .with_atomic_create(cap.write_with_if_not_exists && !cap.rename);
        match self.remote_bound {
            Some(bound) => info.with_remote_bound(bound),
            None => info,
        }
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        validate_key(key)?;
        if key.starts_with(TMP_DIR) || key.starts_with(".coffer-tmp") {
            return Err(Error::new(ErrorKind::ConfigInvalid, "reserved object key").with_context("key", key));
        }
        let cap = self.op.info().capability();
        let create = opts.mode == PutMode::Create;
        if !cap.rename {
            // Object stores and memory: the writer shows the object only
            // when closed.
            let conditional = create && cap.write_with_if_not_exists;
            if create && !conditional && self.exists(key).await? {
                return Err(already_exists(key));
            }
            return self.write(key, key, body, conditional).await;
        }
        // Stage, then rename into place.
        if create && self.exists(key).await? {
            return Err(already_exists(key));
        }
        let tmp = format!("{TMP_DIR}{:016x}", rand::random::<u64>());
        let mut guard = TmpGuard {
            op: Some(self.op.clone()),
            path: tmp.clone(),
        };
        let n = self.write(&tmp, key, body, false).await?;
        // Not atomic: a writer creating the same key in between would be
        // replaced (SinkInfo::atomic_create is false here).
        if create && self.exists(key).await? {
            return Err(already_exists(key));
        }
        // A temporary failure that left the staged object in place did not
        // move it: WebDAV servers answer two concurrent MKCOLs of the same
        // new parent with an error for one (wsgidav: 500 FileExistsError)
        // where the parent then exists, so the rename is tried again.
        let mut retries = 0;
        loop {
            match self.op.rename(&tmp, key).await {
                Ok(()) => break,
                Err(e) if e.is_temporary() && retries < RENAME_RETRIES && self.exists(&tmp).await? => {
                    retries += 1;
                    tracing::debug!(key, "rename failed ({e}); trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * retries)).await;
                }
                Err(e) => return Err(self.err("rename", key, e)),
            }
        }
        guard.op = None;
        Ok(n)
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        validate_key(key)?;
        // The reader is lazy: stat first so a missing key is NotFound here.
        let meta = self.op.stat(key).await.map_err(|e| self.err("get", key, e))?;
        if !meta.mode().is_file() {
            return Err(self.err(
                "get",
                key,
                opendal::Error::new(opendal::ErrorKind::NotFound, "not a file"),
            ));
        }
        let reader = self.op.reader(key).await.map_err(|e| self.err("get", key, e))?;
        let stream = reader
            .into_bytes_stream(..meta.content_length())
            .await
            .map_err(|e| self.err("get", key, e))?;
        let (key, location) = (key.to_string(), self.location.clone());
        Ok(stream
            .map_err(move |e| {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Unexpected
                };
                Error::new(kind, format!("OpenDAL read failed: {e}"))
                    .with_context("sink", location.clone())
                    .with_context("key", key.clone())
                    .set_source(e)
            })
            .boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let entries = match self.op.list_with(dir).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", prefix, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let key = entry.path().trim_start_matches('/');
            if key.ends_with('/')
                || !key.starts_with(prefix)
                || key.starts_with(TMP_DIR)
                || validate_key(key).is_err()
            {
                continue;
            }
            // Listing metadata is incomplete on some services: stat.
            let meta = match self.op.stat(key).await {
                Ok(m) => m,
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("stat", key, e)),
            };
            if !meta.mode().is_file() {
                continue;
            }
            out.push(ObjectMeta {
                key: key.to_string(),
                size: meta.content_length(),
                modified: meta.last_modified().map(|t| t.into_inner()),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

/// Builds the operator of `scheme` from its options.
fn build_operator(
    scheme: &str,
    options: std::collections::BTreeMap<String, String>,
) -> opendal::Result<Operator> {
    Operator::via_iter(scheme, options)
}
