//! coffer-source-k8s: backs up Kubernetes Secrets (selected by namespace
//! and name, or namespace and label selector) and restores them into the
//! same or another namespace.
//!
//! - Connects like `kubectl`: an explicit `kubeconfig` (and `context`),
//!   else `KUBECONFIG`, else `~/.kube/config`, else the in-cluster service
//!   account. Uses the `kube` client.
//! - Each Secret is stored as `secrets/<source>/<namespace>/<name>.json`
//!   (mode 0600), sanitized: `uid`, `resourceVersion`, `creationTimestamp`,
//!   `generation`, `managedFields`, `ownerReferences`, `selfLink`,
//!   `deletion*`, the `kubectl.kubernetes.io/last-applied-configuration`
//!   annotation and `status` are dropped; `type`, `data`, `stringData`,
//!   `immutable`, labels and other annotations are kept. The file is a
//!   valid manifest for `kubectl apply -f`.
//! - A restore creates a missing Secret or replaces an existing one with
//!   optimistic concurrency: the replace carries the `resourceVersion` read
//!   while staging, so a Secret changed in between fails with a conflict
//!   instead of being overwritten blindly. All Secrets are read and planned
//!   before the first write; if a write fails, the Secrets already written
//!   by this restore are put back as they were (created ones deleted).
//!   `--k8s-namespace NS` restores into another namespace; `--dry-run`
//!   lists the Secrets and the keys that would be added, changed, kept or
//!   removed; `--target DIR` writes the manifests to
//!   `DIR/<namespace>/<name>.json` instead of touching the cluster.
//! - Values never appear in reports, actions, errors, logs or `Debug`
//!   output: only Secret and key names do.
//!
//! ```toml
//! [source.k8s-secrets]
//! kind = "k8s"
//! namespace = "issuer-directory"
//! names = ["issuer-directory-secrets"]   # or: selector = "app=issuer-directory"
//! # kubeconfig = "/etc/coffer/kubeconfig"  # default: KUBECONFIG, ~/.kube/config, in-cluster
//! # context = "prod"
//! ```
//!
//! One-off: `--source k8s:NAMESPACE/NAME` or
//! `--source 'k8s:NAMESPACE?selector=app=issuer-directory'` (add
//! `&context=CTX` to pick a kubeconfig context).
#![deny(missing_docs)]

mod client;
mod config;
mod drill;
mod error;
mod restore;
mod sanitize;
mod source;

use std::sync::Arc;

pub use config::K8sSourceConfig;
pub use sanitize::sanitize;
pub use source::K8sSource;

/// The TOML `kind` and one-off prefix of this source: `k8s`.
pub const KIND: &str = "k8s";

/// The restore option (`--opt k8s.namespace`, `--k8s-namespace`) naming
/// the namespace to restore into.
pub const NAMESPACE_OPTION: &str = "namespace";

/// Registers the `k8s` source kind.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_source(Arc::new(source::K8sSourceFactory));
}
