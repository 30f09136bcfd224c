//! Conversion of driver errors into coffer's [`Error`], with the
//! connection string's password scrubbed from every message.

use coffer_core::{Error, ErrorKind};
use mongodb::error::{CommandError, Error as DriverError, ErrorKind as DriverKind};

/// Duplicate key (`E11000`).
pub(crate) const DUPLICATE_KEY: i32 = 11000;
/// The user may not run the command.
const UNAUTHORIZED: i32 = 13;
/// Wrong user or password (as a command error, e.g. from `saslContinue`).
const AUTHENTICATION_FAILED: i32 = 18;

/// Converts a driver error: `what` says what failed, `uri` is scrubbed
/// from the message, `target` (a redacted description) goes into context.
pub(crate) fn driver(what: impl std::fmt::Display, e: &DriverError, uri: &str, target: &str) -> Error {
    // The kind's own message: the driver's full `Display` adds labels and
    // internal fields that help nobody.
    let detail = match e.kind.as_ref() {
        DriverKind::ServerSelection { message, .. }
        | DriverKind::Authentication { message, .. }
        | DriverKind::InvalidArgument { message, .. }
        | DriverKind::DnsResolve { message, .. }
        | DriverKind::InvalidTlsConfig { message, .. } => message.clone(),
        DriverKind::Command(c) => format!("{} ({} {})", c.message, c.code_name, c.code),
        DriverKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            format!("{} (code {})", w.message, w.code)
        }
        DriverKind::Write(mongodb::error::WriteFailure::WriteConcernError(w)) => {
            format!("{} ({} {})", w.message, w.code_name, w.code)
        }
        DriverKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    };
    let detail = crate::uri::scrub(&detail, uri);
    let (kind, hint, temporary) = match e.kind.as_ref() {
        DriverKind::ServerSelection { .. } => (
            ErrorKind::Unreachable,
            "no MongoDB server answered in time: check the host and port of the connection string and that \
             the server is running and reachable (`server-selection-timeout` sets the wait)",
            true,
        ),
        DriverKind::Io(_) | DriverKind::ConnectionPoolCleared { .. } | DriverKind::DnsResolve { .. } => (
            ErrorKind::Unreachable,
            "the connection to the MongoDB server failed: check the host, port and network",
            true,
        ),
        DriverKind::Authentication { .. }
        | DriverKind::Command(CommandError {
            code: AUTHENTICATION_FAILED,
            ..
        }) => (
            ErrorKind::PermissionDenied,
            "authentication failed: check the user, password and authSource of the connection string",
            false,
        ),
        DriverKind::Command(c) if c.code == UNAUTHORIZED => (
            ErrorKind::PermissionDenied,
            "the MongoDB user lacks a privilege: give it the `backup` role (or `restore` for restores)",
            false,
        ),
        DriverKind::InvalidArgument { .. } | DriverKind::InvalidTlsConfig { .. } => (
            ErrorKind::ConfigInvalid,
            "check the connection string and its options",
            false,
        ),
        _ => (ErrorKind::Unexpected, "", false),
    };
    let mut err = Error::new(kind, format!("{what}: {detail}")).with_context("server", target);
    if !hint.is_empty() {
        err = err.with_hint(hint);
    }
    if temporary {
        err = err.temporary();
    }
    err
}

/// The server error code of a command error, if it is one.
pub(crate) fn code(e: &DriverError) -> Option<i32> {
    match e.kind.as_ref() {
        DriverKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Document, doc};

    /// A write the server refuses reads as the server's message and code,
    /// not as the driver's dump of the raw reply.
    #[tokio::test]
    async fn a_write_error_is_the_servers_message_not_its_raw_reply() {
        let Some(server) = coffer_e2e::mongo_server::MongoServer::start() else {
            return;
        };
        let c = mongodb::Client::with_uri_str(server.uri("")).await.unwrap();
        let coll = c.database("t").collection::<Document>("c");
        coll.insert_one(doc! { "_id": 1 }).await.unwrap();
        let e = coll.insert_one(doc! { "_id": 1 }).await.unwrap_err();
        let text = super::driver("cannot insert", &e, &server.uri(""), "t").to_string();
        assert!(text.contains("E11000") && text.contains("(code 11000)"), "{text}");
        assert!(
            !text.contains("RawDocumentBuf") && !text.contains("server response"),
            "{text}"
        );
    }
}
