//! The one error type of coffer: a kind, a message, context, a hint for the
//! user, and whether retrying may help.

use std::fmt;

/// What kind of failure an [`Error`] is. Callers branch on this, never on
/// the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object, snapshot, file or key does not exist.
    NotFound,
    /// The object already exists and the operation must not overwrite it.
    AlreadyExists,
    /// The operating system or a server refused access.
    PermissionDenied,
    /// The configuration (file, flags, URL) is malformed or inconsistent.
    ConfigInvalid,
    /// The operation is not supported by this plugin or server.
    Unsupported,
    /// Data failed a checksum, signature, size or format check: the bundle
    /// is corrupt, truncated or forged.
    Integrity,
    /// No identity could decrypt the bundle, or a passphrase was wrong.
    Decryption,
    /// A server or path could not be reached.
    Unreachable,
    /// The operation was cancelled (Ctrl-C or a dropped future).
    Cancelled,
    /// No space left on the device.
    StorageFull,
    /// The sink does not exist, or its location holds no coffer sink (an
    /// unmounted disk, a mistyped path): nothing was read or written.
    SinkMissing,
    /// Anything else: a bug or an unexpected response.
    Unexpected,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::PermissionDenied,
        ErrorKind::ConfigInvalid,
        ErrorKind::Unsupported,
        ErrorKind::Integrity,
        ErrorKind::Decryption,
        ErrorKind::Unreachable,
        ErrorKind::Cancelled,
        ErrorKind::StorageFull,
        ErrorKind::SinkMissing,
        ErrorKind::Unexpected,
    ];

    /// A stable, lower-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::ConfigInvalid => "config_invalid",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Decryption => "decryption",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::StorageFull => "storage_full",
            ErrorKind::SinkMissing => "sink_missing",
            ErrorKind::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// coffer's error: what failed (`message`), where (`context` pairs), what to
/// do (`hint`), and whether a retry may succeed (`temporary`).
///
/// Context values must never hold secrets: plugins redact connection strings
/// and secret values before they reach an `Error`.
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    hint: Option<String>,
    temporary: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with coffer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` saying what failed.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            hint: None,
            temporary: false,
            source: None,
        }
    }

    /// Adds a `key: value` pair saying where the error happened.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Adds a line telling the user what to do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Marks the error as temporary: a retry may succeed.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// Attaches the underlying error.
    pub fn set_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What failed, without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `key: value` context pairs.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// What the user should do, if known.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether a retry may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// Prefixes the message, keeping kind, context and hint.
    pub fn prefix(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Appends `more` to the message (`message; more`).
    pub fn suffix(mut self, more: impl fmt::Display) -> Self {
        self.message = format!("{}; {more}", self.message);
        self
    }

    /// Converts an I/O error, choosing the kind from the OS error.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => ErrorKind::StorageFull,
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable => ErrorKind::Unreachable,
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => ErrorKind::Integrity,
            _ => match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
                Some(inner) => inner.kind,
                None => ErrorKind::Unexpected,
            },
        };
        let temporary = matches!(
            err.kind(),
            std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
        );
        let hint = match kind {
            ErrorKind::StorageFull => Some("free space on that filesystem or write elsewhere"),
            ErrorKind::PermissionDenied => Some("check the path's owner and mode"),
            _ => None,
        };
        // An io::Error that wraps one of ours keeps our message.
        if err.get_ref().is_some_and(|e| e.is::<Error>()) {
            let inner = err
                .into_inner()
                .expect("checked")
                .downcast::<Error>()
                .expect("checked");
            return (*inner).prefix(what);
        }
        let mut e = Error::new(kind, format!("{what}: {err}"));
        e.temporary = temporary;
        if let Some(h) = hint {
            e.hint = Some(h.into());
        }
        e.set_source(err)
    }

    /// Converts into an `io::Error` that keeps this error inside, so it can
    /// travel through `Read`/`Write` and come back out with [`Error::io`].
    pub fn into_io(self) -> std::io::Error {
        let kind = match self.kind {
            ErrorKind::NotFound => std::io::ErrorKind::NotFound,
            ErrorKind::Integrity => std::io::ErrorKind::InvalidData,
            ErrorKind::StorageFull => std::io::ErrorKind::StorageFull,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("context", &self.context);
        if let Some(h) = &self.hint {
            d.field("hint", h);
        }
        d.field("temporary", &self.temporary);
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as _)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::io("I/O error", err)
    }
}

/// Shorthand for `Error::new(ErrorKind::ConfigInvalid, ..)`.
pub fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::ConfigInvalid, message)
}

/// `err` and its sources, joined by `: ` (a source whose text the chain
/// already holds is left out): a client library's own message is often
/// terse ("client error (Connect)") and the cause is further down.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_context_and_roundtrips_through_io() {
        let e = Error::new(ErrorKind::Integrity, "hash mismatch")
            .with_context("snapshot", "abc")
            .with_hint("run coffer verify");
        assert_eq!(e.to_string(), "hash mismatch (snapshot: abc)");
        let back = Error::io("reading", e.into_io());
        assert_eq!(back.kind(), ErrorKind::Integrity);
        assert_eq!(back.hint(), Some("run coffer verify"));
        assert!(back.to_string().starts_with("reading: hash mismatch"));
    }

    #[test]
    fn io_kinds_map() {
        let e = Error::io("x", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = Error::io("x", std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert!(e.hint().is_some());
    }
}
