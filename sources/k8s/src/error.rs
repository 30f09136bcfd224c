//! The k8s source's errors: the kubeconfig's and the API server's, with what to do about them.
use std::path::Path;

use coffer_core::{Error, ErrorKind, config_error};

pub(crate) fn kubeconfig_error(path: Option<&Path>, err: &dyn std::error::Error) -> Error {
    let e = config_error(format!("cannot use the kubeconfig: {}", chain(err)));
    let e = match path {
        Some(p) => e.with_context("kubeconfig", p.display()),
        None => e,
    };
    e.with_hint("check the kubeconfig file and the context name (kubectl config get-contexts)")
}

/// What a failed API call means. `what` says what was tried, e.g. `get
/// Secret app/db`; no value of a Secret is ever part of an API error.
pub(crate) fn api_error(err: kube::Error, what: &str, server: &str) -> Error {
    let e = match &err {
        kube::Error::Api(status) => {
            let message = format!(
                "cannot {what}: {} ({} {})",
                status.message, status.code, status.reason
            );
            match status.code {
                401 => Error::new(ErrorKind::PermissionDenied, message).with_hint(
                    "the API server did not accept the credentials: check the kubeconfig user's token or \
                     certificate (kubectl auth whoami), or whether it expired",
                ),
                403 => Error::new(ErrorKind::PermissionDenied, message).with_hint(
                    "grant coffer's user or service account get/list (backup) or get/create/update (restore) \
                     on secrets in that namespace: a Role and RoleBinding",
                ),
                404 => Error::new(ErrorKind::NotFound, message)
                    .with_hint("check the namespace and Secret name (kubectl get secrets -n NAMESPACE)"),
                409 => Error::new(ErrorKind::AlreadyExists, message).with_hint(
                    "the Secret was changed or created by someone else while coffer restored it; \
                     nothing of it was overwritten: check who changed it, then run the restore again",
                ),
                _ => Error::new(ErrorKind::Unexpected, message),
            }
        }
        _ => Error::new(ErrorKind::Unreachable, format!("cannot {what}: {}", chain(&err))).with_hint(
            "check that the API server is reachable at the kubeconfig's address; a certificate error means \
             the kubeconfig's certificate-authority does not match the server",
        ),
    };
    e.with_context("server", server)
}

pub(crate) use coffer_core::error_chain as chain;
