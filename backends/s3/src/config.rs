//! Configuration of the S3 sink: a `[sink.NAME]` table or an `s3://` URL,
//! on top of the standard AWS environment.

use std::time::Duration;

use std::sync::Arc;

use coffer_core::{Result, Sink, SinkSettings, TableContext};
use serde::Deserialize;

use crate::S3Sink;
use crate::error::S3Error;
use crate::lock::{LockMode, ObjectLockConfig};

/// Default part size of multipart uploads: 8 MiB.
pub const DEFAULT_PART_SIZE_MIB: u64 = 8;
/// Default number of parts uploaded at once: 4.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// S3's smallest allowed part (all parts but the last).
const MIN_PART_SIZE_MIB: u64 = 5;
/// S3's largest allowed part.
const MAX_PART_SIZE_MIB: u64 = 5 * 1024;

/// Settings of an S3 sink.
///
/// Anything not set here comes from the standard AWS environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …); what is set
/// here wins.
///
/// ```toml
/// [sink.offsite]
/// kind = "s3"
/// bucket = "backups"
/// prefix = "issuer-directory"       # optional
/// endpoint = "http://127.0.0.1:9000" # optional: MinIO, Ceph, moto …
/// region = "us-east-1"               # optional
/// path-style = true                  # optional; default: path-style with an endpoint
/// storage-class = "STANDARD_IA"      # optional
/// server-side-encryption = "AES256"  # optional: AES256, aws:kms, aws:kms:dsse
/// part-size-mib = 8                  # multipart part size (≥ 5)
/// concurrency = 4                    # parts in flight at once
/// object-lock = { mode = "governance", days = 30 }  # optional, see ObjectLockConfig
/// ```
///
/// Memory of one put is bounded by `part-size-mib × (concurrency + 1)`:
/// `concurrency` parts in flight plus the one being filled (40 MiB by
/// default).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct S3SinkConfig {
    /// The bucket; it must exist (coffer never creates buckets).
    pub bucket: String,
    /// A key prefix inside the bucket (no leading or trailing `/` needed).
    #[serde(default)]
    pub prefix: String,
    /// The endpoint URL (for S3-compatible servers). An `http://` endpoint
    /// given here allows plain HTTP.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region (default: `AWS_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style (`endpoint/bucket/key`) rather than virtual-hosted
    /// (`bucket.endpoint/key`) requests. Default: path-style when an
    /// endpoint is set, virtual-hosted on AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Allow plain-HTTP endpoints (default: `AWS_ALLOW_HTTP`, or implied by
    /// an `http://` endpoint set in the config or URL).
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// Access key id (prefer `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key (prefer `AWS_SECRET_ACCESS_KEY`); never printed.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Storage class of the objects, e.g. `STANDARD_IA`, `GLACIER_IR`.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Server-side encryption: `AES256`, `aws:kms` or `aws:kms:dsse`.
    #[serde(default)]
    pub server_side_encryption: Option<String>,
    /// The KMS key for `aws:kms` encryption.
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    /// Part size of multipart uploads in MiB (5 to 5120; default 8).
    /// Bodies smaller than one part are stored with a single request.
    #[serde(default = "default_part_size")]
    pub part_size_mib: u64,
    /// Parts uploaded concurrently (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Timeout of one HTTP request in seconds (default 120).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Timeout of establishing a connection in seconds (default 5).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// S3 Object Lock on every snapshot object (the bucket must have been
    /// created with Object Lock enabled); see [`ObjectLockConfig`].
    #[serde(default)]
    pub object_lock: Option<ObjectLockConfig>,
}

fn default_part_size() -> u64 {
    DEFAULT_PART_SIZE_MIB
}
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}
pub(crate) fn default_timeout() -> u64 {
    120
}
fn default_connect_timeout() -> u64 {
    5
}

impl std::fmt::Debug for S3SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret key is left out on purpose.
        f.debug_struct("S3SinkConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("storage_class", &self.storage_class)
            .field("server_side_encryption", &self.server_side_encryption)
            .field("part_size_mib", &self.part_size_mib)
            .field("concurrency", &self.concurrency)
            .field("timeout_secs", &self.timeout_secs)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("object_lock", &self.object_lock)
            .finish_non_exhaustive()
    }
}

impl S3SinkConfig {
    /// Settings for `bucket` with defaults for everything else.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3SinkConfig {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: None,
            allow_http: None,
            access_key_id: None,
            secret_access_key: None,
            storage_class: None,
            server_side_encryption: None,
            sse_kms_key_id: None,
            part_size_mib: DEFAULT_PART_SIZE_MIB,
            concurrency: DEFAULT_CONCURRENCY,
            timeout_secs: default_timeout(),
            connect_timeout_secs: default_connect_timeout(),
            object_lock: None,
        }
    }

    /// Sets S3 Object Lock for every snapshot object.
    pub fn with_object_lock(mut self, lock: ObjectLockConfig) -> Self {
        self.object_lock = Some(lock);
        self
    }

    /// Sets the prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the endpoint (an `http://` one allows plain HTTP).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets both keys.
    pub fn with_credentials(mut self, access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret.into());
        self
    }

    /// Sets the multipart part size (MiB) and concurrency.
    pub fn with_parts(mut self, part_size_mib: u64, concurrency: usize) -> Self {
        self.part_size_mib = part_size_mib;
        self.concurrency = concurrency;
        self
    }

    /// Sets the request and connect timeouts.
    pub fn with_timeouts(mut self, request: Duration, connect: Duration) -> Self {
        self.timeout_secs = request.as_secs().max(1);
        self.connect_timeout_secs = connect.as_secs().max(1);
        self
    }

    /// The part size in bytes.
    pub fn part_size(&self) -> usize {
        (self.part_size_mib * 1024 * 1024) as usize
    }

    /// The most memory one put holds in part buffers, in bytes:
    /// `part size × (concurrency + 1)`.
    pub fn max_put_memory(&self) -> u64 {
        self.part_size_mib * 1024 * 1024 * (self.concurrency as u64 + 1)
    }

    /// The key prefix, normalised to `""` or `"p/q/"`.
    pub(crate) fn key_prefix(&self) -> String {
        let p = self.prefix.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    }

    /// `s3://bucket/prefix`, without credentials.
    pub fn location(&self) -> String {
        let p = self.prefix.trim_matches('/');
        let mut loc = format!("s3://{}/{p}", self.bucket);
        if let Some(e) = &self.endpoint {
            loc.push_str(&format!(" at {e}"));
        }
        loc
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.bucket.is_empty() {
            return Err("`bucket` is empty".into());
        }
        if !(MIN_PART_SIZE_MIB..=MAX_PART_SIZE_MIB).contains(&self.part_size_mib) {
            return Err(format!(
                "`part-size-mib` must be between {MIN_PART_SIZE_MIB} and {MAX_PART_SIZE_MIB} (S3's limits), not {}",
                self.part_size_mib
            ));
        }
        if self.concurrency == 0 || self.concurrency > 64 {
            return Err(format!("`concurrency` must be 1 to 64, not {}", self.concurrency));
        }
        if self.timeout_secs == 0 || self.connect_timeout_secs == 0 {
            return Err("timeouts must be at least 1 second".into());
        }
        if let Some(sse) = &self.server_side_encryption
            && !matches!(sse.as_str(), "AES256" | "aws:kms" | "aws:kms:dsse")
        {
            return Err(format!(
                "`server-side-encryption` must be AES256, aws:kms or aws:kms:dsse, not `{sse}`"
            ));
        }
        if let Some(lock) = &self.object_lock {
            lock.validate()?;
        }
        Ok(())
    }
}

impl SinkSettings for S3SinkConfig {
    const KIND: &'static str = crate::KIND;
    const SCHEMES: &'static [&'static str] = &[crate::SCHEME];

    /// Parses the `[sink.NAME]` table (without `kind`). An `object-lock`
    /// table with neither `days` nor its own `retention` derives its
    /// retain-until dates from the sink's coffer retention policy (see
    /// [`crate::ObjectLockConfig`]).
    fn from_table(mut table: coffer_core::toml::Table, at: &TableContext<'_>) -> Result<Self> {
        let name = at.name;
        if let (Some(r), Some(coffer_core::toml::Value::Table(lock))) =
            (at.retention, table.get_mut("object-lock"))
            && !lock.contains_key("days")
            && !lock.contains_key("retention")
        {
            lock.insert("retention".into(), r.clone());
        }
        let config: S3SinkConfig = coffer_core::toml::Value::Table(table).try_into().map_err(
            |e: coffer_core::toml::de::Error| S3Error::InvalidConfig {
                name: name.to_string(),
                message: e.message().to_string(),
            },
        )?;
        config.validate().map_err(|message| S3Error::InvalidConfig {
            name: name.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Parses `s3://BUCKET[/PREFIX][?endpoint=…&region=…&path-style=true…]`.
    /// Query keys are the TOML keys; credentials are not accepted in a URL.
    fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| S3Error::InvalidUrl {
            url: redact_query(url),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("it does not start with s3://".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let (bucket, prefix) = match path.split_once('/') {
            Some((b, p)) => (b, p),
            None => (path, ""),
        };
        if bucket.is_empty() {
            return Err(invalid("no bucket after s3://".into()).into());
        }
        let mut config = S3SinkConfig::new(percent_decode(bucket)?).with_prefix(percent_decode(prefix)?);
        let (mut lock_mode, mut lock_days) = (None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("query option `{pair}` has no `=`")))?;
            let v = percent_decode(v)?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| invalid(format!("`{k}` must be a whole number, not `{v}`")))
            };
            let flag = |v: &str| match v {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(invalid(format!("`{k}` must be true or false, not `{v}`"))),
            };
            match k {
                "endpoint" => config.endpoint = Some(v),
                "region" => config.region = Some(v),
                "path-style" => config.path_style = Some(flag(&v)?),
                "allow-http" => config.allow_http = Some(flag(&v)?),
                "storage-class" => config.storage_class = Some(v),
                "server-side-encryption" => config.server_side_encryption = Some(v),
                "sse-kms-key-id" => config.sse_kms_key_id = Some(v),
                "part-size-mib" => config.part_size_mib = num(&v)?,
                "concurrency" => config.concurrency = num(&v)? as usize,
                "timeout-secs" => config.timeout_secs = num(&v)?,
                "connect-timeout-secs" => config.connect_timeout_secs = num(&v)?,
                "object-lock" => {
                    lock_mode = Some(LockMode::parse(&v).ok_or_else(|| {
                        invalid(format!(
                            "`object-lock` must be governance or compliance, not `{v}`"
                        ))
                    })?)
                }
                "object-lock-days" => {
                    lock_days = Some(
                        u32::try_from(num(&v)?)
                            .map_err(|_| invalid(format!("`object-lock-days` is too large: {v}")))?,
                    )
                }
                "access-key-id" | "secret-access-key" | "session-token" => {
                    return Err(S3Error::CredentialsInUrl.into());
                }
                other => return Err(invalid(format!("unknown option `{other}`")).into()),
            }
        }
        match (lock_mode, lock_days) {
            (Some(mode), Some(days)) => config.object_lock = Some(ObjectLockConfig::days(mode, days)),
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "`object-lock=governance|compliance` and `object-lock-days=N` go together".into(),
                )
                .into());
            }
        }
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    fn open(self) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(S3Sink::new(&self)?))
    }
}

/// Decodes `%XX` escapes of a URL component, which must then be UTF-8.
fn percent_decode(s: &str) -> Result<String> {
    String::from_utf8(coffer_core::percent_decode(s))
        .map_err(|_| coffer_core::config_error(format!("`{s}` is not UTF-8 once percent-decoded")))
}

/// The URL without its query (which might hold a misplaced secret).
pub(crate) fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((u, _)) => format!("{u}?…"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = S3SinkConfig::from_url("s3://b").unwrap();
        assert_eq!((c.bucket.as_str(), c.key_prefix().as_str()), ("b", ""));
        let c = S3SinkConfig::from_url(
            "s3://b/some/pre%20fix/?endpoint=http://127.0.0.1:9000&region=eu-west-1&path-style=true&part-size-mib=16&concurrency=2",
        )
        .unwrap();
        assert_eq!(c.key_prefix(), "some/pre fix/");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.path_style, Some(true));
        assert_eq!(c.max_put_memory(), 48 << 20);
        for bad in [
            "s3://",
            "s3:///x",
            "s3://b?bogus=1",
            "s3://b?part-size-mib=1",
            "s3://b?concurrency=0",
            "s3://b?path-style=maybe",
            "s3://b?server-side-encryption=rot13",
        ] {
            assert!(S3SinkConfig::from_url(bad).is_err(), "{bad}");
        }
        let err = S3SinkConfig::from_url("s3://b?secret-access-key=hunter2").unwrap_err();
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        assert!(err.hint().unwrap().contains("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = S3SinkConfig::new("b").with_credentials("AKID", "hunter2");
        let d = format!("{c:?}");
        assert!(d.contains("AKID") && !d.contains("hunter2"), "{d}");
    }

    #[test]
    fn tables() {
        let t: coffer_core::toml::Table =
            "bucket = \"b\"\nprefix = \"p\"\npath-style = true\nstorage-class = \"STANDARD_IA\""
                .parse()
                .unwrap();
        let c = S3SinkConfig::from_table(t, &TableContext::new("x", std::path::Path::new("."))).unwrap();
        assert_eq!(c.storage_class.as_deref(), Some("STANDARD_IA"));
        let t: coffer_core::toml::Table = "bucket = \"b\"\npath = \"p\"".parse().unwrap();
        let err =
            S3SinkConfig::from_table(t, &TableContext::new("x", std::path::Path::new("."))).unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
    }

    #[test]
    fn object_lock_settings() {
        let c = S3SinkConfig::from_url("s3://b?object-lock=compliance&object-lock-days=30").unwrap();
        assert_eq!(
            c.object_lock,
            Some(ObjectLockConfig::days(LockMode::Compliance, 30))
        );
        for bad in [
            "s3://b?object-lock=governance",
            "s3://b?object-lock-days=3",
            "s3://b?object-lock=strict&object-lock-days=3",
            "s3://b?object-lock=governance&object-lock-days=0",
        ] {
            assert!(S3SinkConfig::from_url(bad).is_err(), "{bad}");
        }
        let t: coffer_core::toml::Table = "bucket = \"b\"\n\
             object-lock = { mode = \"governance\", retention = { keep-daily = 7, keep-monthly = 12 } }"
            .parse()
            .unwrap();
        let c = S3SinkConfig::from_table(t, &TableContext::new("x", std::path::Path::new("."))).unwrap();
        let lock = c.object_lock.unwrap();
        assert_eq!(lock.mode, LockMode::Governance);
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(lock.retain_until(t0).unwrap().to_string(), "2027-01-01T00:00:00Z");
        // Neither days nor a time-based policy: refused, saying what to add.
        let t: coffer_core::toml::Table = "bucket = \"b\"\nobject-lock = { mode = \"governance\" }"
            .parse()
            .unwrap();
        let err =
            S3SinkConfig::from_table(t, &TableContext::new("x", std::path::Path::new("."))).unwrap_err();
        assert!(err.to_string().contains("days"), "{err}");
    }
}
