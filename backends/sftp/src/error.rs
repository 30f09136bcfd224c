//! Errors of the SFTP sink, converted into coffer's error with a hint.

use coffer_core::{Error, ErrorKind};

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SftpError {
    #[error("invalid SFTP URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid SFTP sink config for `{name}`: {message}")]
    InvalidConfig { name: String, message: String },
    #[error("passwords are not accepted in an sftp:// URL")]
    PasswordInUrl,
    #[error("cannot connect to {location}: {message}")]
    Connect {
        location: String,
        message: String,
        refused: bool,
    },
    #[error("connecting to {location} timed out after {secs} s")]
    ConnectTimeout { location: String, secs: u64 },
    #[error("the host key of {host} ({fingerprint}) is not in {known_hosts}")]
    UnknownHostKey {
        host: String,
        fingerprint: String,
        known_hosts: String,
    },
    #[error(
        "the host key of {host} ({fingerprint}) does not match line {line} of {known_hosts}: possible man-in-the-middle attack"
    )]
    HostKeyChanged {
        host: String,
        fingerprint: String,
        known_hosts: String,
        line: usize,
    },
    #[error("cannot read the SSH key {path}: {message}")]
    Key { path: String, message: String },
    #[error("the server {location} refused the key {key} for user {user}")]
    AuthRejected {
        location: String,
        user: String,
        key: String,
    },
    #[error("the server {location} has no SFTP subsystem: {message}")]
    NoSftp { location: String, message: String },
    #[error("object `{key}` already exists")]
    AlreadyExists { key: String },
    #[error("SFTP {op} failed on {location}: {message}")]
    Op {
        op: String,
        location: String,
        message: String,
        kind: ErrorKind,
        temporary: bool,
    },
}

impl From<SftpError> for Error {
    fn from(err: SftpError) -> Self {
        let message = err.to_string();
        match err {
            SftpError::InvalidUrl { url, .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_context("url", url)
                .with_hint("write sftp://USER@HOST:PORT/PATH?key=/path/id_ed25519&known-hosts=/path/known_hosts"),
            SftpError::InvalidConfig { .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_hint("an sftp sink takes host, port, user, path, key, known-hosts, insecure-accept-host-key, connect-timeout-secs, timeout-secs"),
            SftpError::PasswordInUrl => Error::new(ErrorKind::ConfigInvalid, message)
                .with_hint("use key authentication: ?key=/path/to/id_ed25519"),
            SftpError::Connect { refused, .. } => Error::new(ErrorKind::Unreachable, message)
                .with_hint(if refused {
                    "nothing listens there: check the host and port, and that sshd runs"
                } else {
                    "check the host name, port and network"
                })
                .temporary(),
            SftpError::ConnectTimeout { .. } => Error::new(ErrorKind::Unreachable, message)
                .with_hint("check the host, port and firewall; the server did not complete the SSH handshake")
                .temporary(),
            SftpError::UnknownHostKey { host, known_hosts, .. } => Error::new(ErrorKind::PermissionDenied, message).with_hint(format!(
                "verify the fingerprint with the server's admin, then add it: ssh-keyscan -p PORT {host} >> {known_hosts} \
                 (or pass insecure-accept-host-key=true, which trusts any server)"
            )),
            SftpError::HostKeyChanged { .. } => Error::new(ErrorKind::PermissionDenied, message)
                .with_hint("if the server's key really changed, remove the old line from known_hosts; otherwise do not connect"),
            SftpError::Key { .. } => Error::new(ErrorKind::ConfigInvalid, message)
                .with_hint("give an unencrypted OpenSSH private key (ssh-keygen -t ed25519 -N '')"),
            SftpError::AuthRejected { .. } => Error::new(ErrorKind::PermissionDenied, message)
                .with_hint("check the user name and that the public key is in the server's authorized_keys"),
            SftpError::NoSftp { .. } => Error::new(ErrorKind::Unsupported, message)
                .with_hint("enable `Subsystem sftp internal-sftp` in the server's sshd_config"),
            SftpError::AlreadyExists { key } => Error::new(ErrorKind::AlreadyExists, message).with_context("key", key),
            SftpError::Op { kind, temporary, .. } => {
                let mut e = Error::new(kind, message);
                if kind == ErrorKind::PermissionDenied {
                    e = e.with_hint("check the owner and mode of the sink directory on the server");
                }
                if temporary {
                    e = e.temporary().with_hint("the connection dropped or timed out; run again");
                }
                e
            }
        }
    }
}
