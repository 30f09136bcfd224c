//! [`S3Sink`]: a [`Sink`] over any `object_store` [`ObjectStore`].
//!
//! All I/O is async HTTP on the caller's Tokio runtime; nothing blocks.
//! Multipart parts are uploaded by spawned tasks (at most `concurrency` at
//! once) so the body keeps streaming while parts are in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use coffer_core::{
    ByteStream, Error, ObjectMeta, PutMode, PutOptions, Result, Sink, SinkInfo, SinkSettings, validate_key,
    validate_prefix,
};
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, Attributes, ClientOptions, HeaderMap, HeaderValue, MultipartUpload, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutPayload, RetryConfig,
};
use tokio::task::JoinSet;

use crate::config::{DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE_MIB, S3SinkConfig};
use crate::error::{S3Error, store_error};
use crate::lock::{ObjectLockConfig, header_date, snapshot_time};

/// How long an abort of a failed multipart upload may take.
const ABORT_TIMEOUT: Duration = Duration::from_secs(15);

/// A sink storing each object under `prefix/key` of an object store: S3
/// (built from [`S3SinkConfig`]) or any other `Arc<dyn ObjectStore>` given
/// to [`S3Sink::from_store`] (GCS, Azure, an in-memory store …).
///
/// Cheap to clone. See the crate docs for the guarantees of `put`.
#[derive(Debug, Clone)]
pub struct S3Sink {
    store: Arc<dyn ObjectStore>,
    /// `""` or `"a/b/"`.
    prefix: String,
    location: String,
    scheme: &'static str,
    part_size: usize,
    concurrency: usize,
    attributes: Attributes,
    /// Object Lock settings, and the settings to build a client that sends
    /// the lock headers.
    lock: Option<Arc<LockSetup>>,
    /// The longest one operation may take (see [`SinkInfo::remote_bound`]).
    bound: Duration,
}

#[derive(Debug)]
struct LockSetup {
    lock: ObjectLockConfig,
    config: S3SinkConfig,
}

impl S3Sink {
    /// A sink over S3 (or an S3-compatible server) from its settings and
    /// the standard AWS environment. Contacts nothing yet.
    pub fn new(config: &S3SinkConfig) -> Result<Self> {
        let store = build_s3(config, None)?;
        let mut attributes = Attributes::new();
        if let Some(class) = &config.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        Ok(S3Sink {
            store: Arc::new(store),
            prefix: config.key_prefix(),
            location: config.location(),
            scheme: crate::SCHEME,
            bound: remote_bound(config),
            part_size: config.part_size(),
            concurrency: config.concurrency,
            attributes,
            lock: config.object_lock.clone().map(|lock| {
                Arc::new(LockSetup {
                    lock,
                    config: config.clone(),
                })
            }),
        })
    }

    /// A sink from `s3://BUCKET/PREFIX?…` (see [`S3SinkConfig::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(&S3SinkConfig::from_url(url)?)
    }

    /// A sink over any object store, e.g. one a program already has.
    /// `location` describes it in messages (no credentials). Objects go
    /// under the store's root until [`S3Sink::with_prefix`].
    pub fn from_store(store: Arc<dyn ObjectStore>, location: impl Into<String>) -> Self {
        S3Sink {
            store,
            prefix: String::new(),
            location: location.into(),
            scheme: "object-store",
            bound: Duration::from_secs(
                crate::config::default_timeout()
                    .saturating_mul(2)
                    .saturating_add(30),
            ),
            part_size: (DEFAULT_PART_SIZE_MIB as usize) << 20,
            concurrency: DEFAULT_CONCURRENCY,
            attributes: Attributes::new(),
            lock: None,
        }
    }

    /// Stores under `prefix/` inside the store.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        let p = prefix.trim_matches('/');
        self.prefix = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        self
    }

    /// Sets the multipart part size (bytes) and the parts in flight. The
    /// memory of one put is bounded by `part_size × (concurrency + 1)`.
    pub fn with_parts(mut self, part_size: usize, concurrency: usize) -> Self {
        self.part_size = part_size.max(1);
        self.concurrency = concurrency.max(1);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn path(&self, key: &str) -> Result<StorePath> {
        StorePath::parse(format!("{}{key}", self.prefix))
            .map_err(|e| store_error("path", key, &self.location, e.into()))
    }

    /// The store to put `key` with: with Object Lock configured and `key`
    /// an object of a snapshot whose retain-until date is still ahead, a
    /// client sending the lock headers (object_store 0.14 takes no
    /// per-request headers, so they are the client's default headers, and
    /// signed); else the sink's store.
    fn store_for_put(&self, key: &str) -> Result<Arc<dyn ObjectStore>> {
        let Some(setup) = &self.lock else {
            return Ok(self.store.clone());
        };
        let Some(until) = snapshot_time(key).and_then(|t| setup.lock.retain_until(t)) else {
            return Ok(self.store.clone());
        };
        if until <= Timestamp::now() + SignedDuration::from_secs(60) {
            tracing::info!(%key, %until, "no object lock: its retain-until date is already past");
            return Ok(self.store.clone());
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amz-object-lock-mode",
            HeaderValue::from_static(setup.lock.mode.header_value()),
        );
        headers.insert(
            "x-amz-object-lock-retain-until-date",
            HeaderValue::from_str(&header_date(until)).expect("an ASCII date"),
        );
        // S3 requires an integrity checksum with lock headers; the client
        // sends x-amz-checksum-sha256 (see build_s3).
        headers.insert("x-amz-sdk-checksum-algorithm", HeaderValue::from_static("SHA256"));
        tracing::debug!(%key, %until, mode = setup.lock.mode.header_value(), "object lock");
        Ok(Arc::new(build_s3(&setup.config, Some(headers))?))
    }

    fn err(&self, op: &str, key: &str, e: object_store::Error) -> Error {
        store_error(op, key, &self.location, e)
    }

    async fn exists(&self, path: &StorePath, key: &str) -> Result<bool> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("head", key, e)),
        }
    }

    /// Streams `first` (a full part) and the rest of `body` as a multipart
    /// upload, aborted on any failure.
    async fn put_multipart(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &str,
        path: &StorePath,
        mut buf: PartBuffer,
        mut body: ByteStream,
        mode: PutMode,
    ) -> Result<u64> {
        if mode == PutMode::Create && self.exists(path, key).await? {
            return Err(S3Error::AlreadyExists { key: key.into() }.into());
        }
        let opts = PutMultipartOptions {
            attributes: self.attributes.clone(),
            ..Default::default()
        };
        let upload = store
            .put_multipart_opts(path, opts)
            .await
            .map_err(|e| self.err("starting a multipart upload", key, e))?;
        let mut guard = AbortGuard {
            upload: Some(upload),
            key: key.to_string(),
        };
        let mut parts: JoinSet<object_store::Result<()>> = JoinSet::new();
        let outcome: Result<u64> = async {
            let mut ended = false;
            loop {
                while buf.len >= self.part_size || (ended && buf.len > 0) {
                    while parts.len() >= self.concurrency {
                        self.join_part(&mut parts, key).await?;
                    }
                    let payload = buf.take(self.part_size);
                    parts.spawn(guard.upload().put_part(payload));
                }
                if ended {
                    break;
                }
                while let Some(done) = parts.try_join_next() {
                    part_result(done).map_err(|e| self.err("uploading a part", key, e))?;
                }
                match body.next().await {
                    None => ended = true,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(chunk)) => buf.push(chunk),
                }
            }
            while !parts.is_empty() {
                self.join_part(&mut parts, key).await?;
            }
            // object_store 0.14 has no conditional multipart completion:
            // check just before completing. Another writer completing the
            // same key between this check and ours would be replaced;
            // snapshot keys carry a random suffix, so only a copy of the
            // very same snapshot could race here.
            if mode == PutMode::Create && self.exists(path, key).await? {
                return Err(S3Error::AlreadyExists { key: key.into() }.into());
            }
            guard
                .upload()
                .complete()
                .await
                .map_err(|e| self.err("completing the multipart upload", key, e))?;
            Ok(buf.total)
        }
        .await;
        match outcome {
            Ok(n) => {
                guard.upload = None;
                Ok(n)
            }
            Err(e) => {
                parts.abort_all();
                while parts.join_next().await.is_some() {}
                guard.abort().await;
                Err(e)
            }
        }
    }

    async fn join_part(&self, parts: &mut JoinSet<object_store::Result<()>>, key: &str) -> Result<()> {
        if let Some(done) = parts.join_next().await {
            part_result(done).map_err(|e| self.err("uploading a part", key, e))?;
        }
        Ok(())
    }
}

fn part_result(
    done: std::result::Result<object_store::Result<()>, tokio::task::JoinError>,
) -> object_store::Result<()> {
    match done {
        Ok(r) => r,
        Err(e) => Err(object_store::Error::JoinError { source: e }),
    }
}

/// Chunks of the body not yet sent, as `Bytes` (no copies).
#[derive(Default)]
struct PartBuffer {
    chunks: VecDeque<Bytes>,
    len: usize,
    total: u64,
}

impl PartBuffer {
    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        self.total += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }

    /// Takes up to `n` bytes from the front.
    fn take(&mut self, n: usize) -> PutPayload {
        let mut out = Vec::new();
        let mut want = n;
        while want > 0 {
            let Some(mut c) = self.chunks.pop_front() else {
                break;
            };
            if c.len() > want {
                let rest = c.split_off(want);
                self.chunks.push_front(rest);
            }
            want -= c.len();
            self.len -= c.len();
            out.push(c);
        }
        out.into_iter().collect()
    }
}

/// Aborts the multipart upload unless disarmed: explicitly on errors, from
/// a spawned task when the put is dropped, so no parts linger (best
/// effort: a server that is down cannot be told; see the crate docs).
struct AbortGuard {
    upload: Option<Box<dyn MultipartUpload>>,
    key: String,
}

impl AbortGuard {
    fn upload(&mut self) -> &mut Box<dyn MultipartUpload> {
        self.upload
            .as_mut()
            .expect("upload present until completed or aborted")
    }

    async fn abort(&mut self) {
        if let Some(mut up) = self.upload.take() {
            match tokio::time::timeout(ABORT_TIMEOUT, up.abort()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(key = %self.key, error = %e, "could not abort a multipart upload; its parts may linger until a lifecycle rule removes them")
                }
                Err(_) => {
                    tracing::warn!(key = %self.key, "aborting a multipart upload timed out; its parts may linger")
                }
            }
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(mut up) = self.upload.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let key = std::mem::take(&mut self.key);
            handle.spawn(async move {
                if !matches!(tokio::time::timeout(ABORT_TIMEOUT, up.abort()).await, Ok(Ok(()))) {
                    tracing::warn!(%key, "could not abort the multipart upload of a dropped put");
                }
            });
        }
    }
}

#[async_trait]
impl Sink for S3Sink {
    fn info(&self) -> SinkInfo {
        // Create-only is atomic (a conditional PUT) for bodies smaller than
        // one part: indexes, locks, signatures. See the crate docs for
        // multipart objects.
        SinkInfo::new(self.scheme, self.location.clone())
            .with_atomic_create(true)
            .with_remote_bound(self.bound)
    }

    async fn put(&self, key: &str, mut body: ByteStream, opts: PutOptions) -> Result<u64> {
        validate_key(key)?;
        let path = self.path(key)?;
        let store = self.store_for_put(key)?;
        let mut buf = PartBuffer::default();
        while buf.len < self.part_size {
            match body.next().await {
                Some(Ok(chunk)) => buf.push(chunk),
                Some(Err(e)) => return Err(e),
                None => {
                    let total = buf.total;
                    let payload = buf.take(usize::MAX);
                    let mode = match opts.mode {
                        PutMode::Create => object_store::PutMode::Create,
                        _ => object_store::PutMode::Overwrite,
                    };
                    let put_opts = object_store::PutOptions {
                        mode,
                        attributes: self.attributes.clone(),
                        ..Default::default()
                    };
                    store
                        .put_opts(&path, payload, put_opts)
                        .await
                        .map_err(|e| self.err("put", key, e))?;
                    return Ok(total);
                }
            }
        }
        self.put_multipart(&store, key, &path, buf, body, opts.mode).await
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        validate_key(key)?;
        let path = self.path(key)?;
        let result = self.store.get(&path).await.map_err(|e| self.err("get", key, e))?;
        let (key, location) = (key.to_string(), self.location.clone());
        Ok(result
            .into_stream()
            .map_err(move |e| store_error("reading", &key, &location, e))
            .boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let full = format!("{}{prefix}", self.prefix);
        let dir = match full.rfind('/') {
            Some(i) => Some(StorePath::parse(&full[..i]).map_err(|e| self.err("list", prefix, e.into()))?),
            None => None,
        };
        let mut out = Vec::new();
        let mut stream = self.store.list(dir.as_ref());
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| self.err("list", prefix, e))?;
            let Some(key) = meta.location.as_ref().strip_prefix(&self.prefix) else {
                continue;
            };
            if !key.starts_with(prefix) || validate_key(key).is_err() {
                continue;
            }
            out.push(ObjectMeta {
                key: key.to_string(),
                size: meta.size,
                modified: jiff::Timestamp::from_millisecond(meta.last_modified.timestamp_millis()).ok(),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

/// Builds the `object_store` S3 client: environment first, then the
/// config's explicit settings, with bounded timeouts and retries so an
/// unreachable endpoint fails in seconds rather than minutes.
///
/// `lock_headers` (Object Lock) become default headers of every request,
/// with SHA-256 checksums on every upload, which S3 requires with them.
fn build_s3(config: &S3SinkConfig, lock_headers: Option<HeaderMap>) -> Result<object_store::aws::AmazonS3> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
    if let Some(e) = &config.endpoint {
        b = b.with_endpoint(e);
        if e.starts_with("http://") && config.allow_http.is_none() {
            b = b.with_allow_http(true);
        }
    }
    if let Some(r) = &config.region {
        b = b.with_region(r);
    }
    if let Some(a) = config.allow_http {
        b = b.with_allow_http(a);
    }
    let endpoint_set =
        config.endpoint.is_some() || b.get_config_value(&AmazonS3ConfigKey::Endpoint).is_some();
    let path_style = config.path_style.unwrap_or(endpoint_set);
    b = b.with_virtual_hosted_style_request(!path_style);
    if let Some(k) = &config.access_key_id {
        b = b.with_access_key_id(k);
    }
    if let Some(s) = &config.secret_access_key {
        b = b.with_secret_access_key(s);
    }
    if let Some(sse) = &config.server_side_encryption {
        let key: AmazonS3ConfigKey = "aws_server_side_encryption".parse().expect("known key");
        b = b.with_config(key, sse);
    }
    if let Some(k) = &config.sse_kms_key_id {
        let key: AmazonS3ConfigKey = "aws_sse_kms_key_id".parse().expect("known key");
        b = b.with_config(key, k);
    }
    let mut client = ClientOptions::new()
        .with_timeout(Duration::from_secs(config.timeout_secs))
        .with_connect_timeout(Duration::from_secs(config.connect_timeout_secs));
    if config.allow_http == Some(true)
        || (config.allow_http.is_none()
            && config
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")))
    {
        client = client.with_allow_http(true);
    } else if let Some(v) = b.get_config_value(&AmazonS3ConfigKey::Client(
        object_store::ClientConfigKey::AllowHttp,
    )) {
        client = client.with_allow_http(v == "true");
    }
    if let Some(headers) = lock_headers {
        client = client.with_default_headers(headers);
        b = b.with_checksum_algorithm(Checksum::SHA256);
    }
    b = b.with_client_options(client).with_retry(RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
        ..Default::default()
    });
    b.build().map_err(|e| {
        S3Error::Client {
            location: config.location(),
            message: e.to_string(),
        }
        .into()
    })
}

/// How long one operation may take before the registry's timeout layer
/// gives up: object_store already retries each HTTP request (3 times
/// within 10 s) and bounds it by `timeout-secs`; the registry's layers
/// retry whole operations on temporary errors (3 times within 30 s) and
/// catch an operation that hangs beyond what the client's own bounds allow
/// (`2 × timeout-secs + 30 s`, also the stall bound of a streaming put or
/// get).
fn remote_bound(config: &S3SinkConfig) -> Duration {
    Duration::from_secs(config.timeout_secs.saturating_mul(2).saturating_add(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_buffer_splits_without_losing_bytes() {
        let mut b = PartBuffer::default();
        for c in [&b"abc"[..], b"", b"defgh", b"ij"] {
            b.push(Bytes::copy_from_slice(c));
        }
        let p: Vec<u8> = b.take(4).into_iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(p, b"abcd");
        assert_eq!(b.len, 6);
        let p: Vec<u8> = b.take(100).into_iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(p, b"efghij");
        assert_eq!((b.len, b.total), (0, 10));
    }
}
