//! Errors of the S3 sink, converted into coffer's error with a hint.

use coffer_core::{Error, ErrorKind};

/// What can go wrong in this crate besides the store's own errors (which
/// [`store_error`] converts).
#[derive(Debug, thiserror::Error)]
pub(crate) enum S3Error {
    #[error("invalid S3 URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid S3 sink config for `{name}`: {message}")]
    InvalidConfig { name: String, message: String },
    #[error("credentials are not accepted in an s3:// URL")]
    CredentialsInUrl,
    #[error("cannot set up the S3 client for {location}: {message}")]
    Client { location: String, message: String },
    #[error("object `{key}` already exists")]
    AlreadyExists { key: String },
}

impl From<S3Error> for Error {
    fn from(err: S3Error) -> Self {
        let message = err.to_string();
        match err {
            S3Error::InvalidUrl { url, .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_context("url", url)
                .with_hint("write s3://BUCKET/PREFIX?endpoint=URL&region=REGION (see docs/sinks.md)"),
            S3Error::InvalidConfig { .. } => Error::new(ErrorKind::ConfigInvalid, message).with_hint(
                "an s3 sink takes bucket, prefix, endpoint, region, path-style, storage-class, \
                 server-side-encryption, part-size-mib, concurrency, timeout-secs, object-lock",
            ),
            S3Error::CredentialsInUrl => Error::new(ErrorKind::ConfigInvalid, message).with_hint(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (a URL ends up in shell history and process lists)",
            ),
            S3Error::Client { .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_hint("check the endpoint, region and bucket settings"),
            S3Error::AlreadyExists { key } => {
                Error::new(ErrorKind::AlreadyExists, message).with_context("key", key)
            }
        }
    }
}

/// Converts an `object_store` error of operation `op` on `key` of the sink
/// at `location` into coffer's error, choosing the kind and a hint.
///
/// The store's messages carry no credentials (requests are signed, the
/// secret is never sent), so they are kept.
pub(crate) fn store_error(op: &str, key: &str, location: &str, err: object_store::Error) -> Error {
    use object_store::Error as E;
    let chain = coffer_core::error_chain(&err);
    let (kind, hint, temporary): (ErrorKind, Option<&str>, bool) = if chain.contains("NoSuchBucket") {
        (
            ErrorKind::NotFound,
            Some("the bucket does not exist: create it (coffer never creates buckets) or fix its name"),
            false,
        )
    } else if chain.contains("ObjectLockConfiguration") || chain.contains("Object Lock Configuration") {
        (
            ErrorKind::ConfigInvalid,
            Some(
                "object-lock is set, but the bucket has no Object Lock: create the bucket with it enabled \
                 (`aws s3api create-bucket --object-lock-enabled-for-bucket`) or remove object-lock",
            ),
            false,
        )
    } else {
        match &err {
            E::NotFound { .. } => (ErrorKind::NotFound, None, false),
            E::AlreadyExists { .. } | E::Precondition { .. } => (ErrorKind::AlreadyExists, None, false),
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => (
                ErrorKind::PermissionDenied,
                Some(
                    "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the bucket policy",
                ),
                false,
            ),
            E::NotSupported { .. } | E::NotImplemented { .. } => (ErrorKind::Unsupported, None, false),
            E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => {
                (ErrorKind::ConfigInvalid, None, false)
            }
            _ if is_unreachable(&chain) => (
                ErrorKind::Unreachable,
                Some("check the endpoint URL and that the S3 server is up and reachable"),
                true,
            ),
            _ if chain.contains("InvalidAccessKeyId")
                || chain.contains("SignatureDoesNotMatch")
                || chain.contains("AccessDenied") =>
            {
                (
                    ErrorKind::PermissionDenied,
                    Some(
                        "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the bucket policy",
                    ),
                    false,
                )
            }
            _ => (ErrorKind::Unexpected, None, chain.contains("timed out")),
        }
    };
    let mut e = Error::new(kind, format!("S3 {op} failed: {}", summary(&chain)))
        .with_context("sink", location)
        .with_context("key", key);
    if let Some(h) = hint {
        e = e.with_hint(h);
    }
    if temporary {
        e = e.temporary();
    }
    e.set_source(err)
}

fn is_unreachable(chain: &str) -> bool {
    let c = chain.to_ascii_lowercase();
    c.contains("connection refused")
        || c.contains("error sending request")
        || c.contains("dns error")
        || c.contains("connect error")
        || c.contains("timed out")
        || c.contains("connection reset")
        || c.contains("connection closed")
        || c.contains("broken pipe")
}

/// The first line of the chain, with the S3 error body (`<Code>`,
/// `<Message>`) folded in when the body starts on the next line.
fn summary(chain: &str) -> String {
    let line = first_line(chain);
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = chain.find(&open)? + open.len();
        let len = chain[start..].find(&format!("</{name}>"))?;
        Some(chain[start..start + len].trim().to_string())
    };
    match tag("Code") {
        Some(code) if !line.contains(&format!("<Code>{code}")) => {
            let head = match line.find("<?xml") {
                Some(i) => line[..i].trim_end().trim_end_matches(':'),
                None => line.as_str(),
            };
            match tag("Message") {
                Some(m) if !m.is_empty() => format!("{head}: {code}: {}", first_line(&m)),
                _ => format!("{head}: {code}"),
            }
        }
        _ => line,
    }
}

/// Long XML bodies stay out of the one-line message.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.len() > 600 {
        let mut end = 600;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &line[..end])
    } else {
        line.to_string()
    }
}
