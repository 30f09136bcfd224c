//! The OpenDAL sink's errors: OpenDAL's mapped to coffer's kinds, with hints.
use coffer_core::{Error, ErrorKind};

/// Converts an OpenDAL error of operation `op` on `key` into coffer's
/// error, choosing the kind and a hint. OpenDAL's messages name the
/// service and path, never option values.
pub(crate) fn map_error(location: &str, op: &str, key: &str, e: opendal::Error) -> Error {
    use opendal::ErrorKind as K;
    let (kind, hint): (ErrorKind, Option<&str>) = match e.kind() {
        K::NotFound => (ErrorKind::NotFound, None),
        K::AlreadyExists | K::ConditionNotMatch => (ErrorKind::AlreadyExists, None),
        K::PermissionDenied => (
            ErrorKind::PermissionDenied,
            Some("check the service's credentials and permissions (options / options-env)"),
        ),
        K::ConfigInvalid => (ErrorKind::ConfigInvalid, Some("check the service's options")),
        K::Unsupported => (ErrorKind::Unsupported, None),
        _ if e.is_temporary() => (
            ErrorKind::Unreachable,
            Some("check that the service is up and reachable (endpoint option)"),
        ),
        _ => (ErrorKind::Unexpected, None),
    };
    let temporary = e.is_temporary();
    let mut out = Error::new(kind, format!("OpenDAL {op} failed: {e}"))
        .with_context("sink", location)
        .with_context("key", key)
        .set_source(e);
    if let Some(h) = hint {
        out = out.with_hint(h);
    }
    if temporary {
        out = out.temporary();
    }
    out
}

pub(crate) fn already_exists(key: &str) -> Error {
    Error::new(ErrorKind::AlreadyExists, format!("object `{key}` already exists")).with_context("key", key)
}
