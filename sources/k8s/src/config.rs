//! The `[source.NAME] kind = "k8s"` table.

use std::path::PathBuf;

use coffer_core::{Result, config_error, toml};
use serde::{Deserialize, Serialize};

/// Settings of a `k8s` source: which Secrets, and how to reach the API
/// server. Holds no secret (credentials stay in the kubeconfig).
///
/// ```toml
/// [source.k8s-secrets]
/// kind = "k8s"
/// namespace = "issuer-directory"
/// names = ["issuer-directory-secrets"]   # or: selector = "app=issuer-directory"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct K8sSourceConfig {
    /// The namespace of the Secrets.
    pub namespace: String,
    /// Secret names (each must exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// A label selector (`app=x,tier!=cache`); must select at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// A kubeconfig file (relative to the config file); default:
    /// `KUBECONFIG`, `~/.kube/config`, then the in-cluster service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig (default: its current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl K8sSourceConfig {
    /// Parses a `[source.NAME]` table (without `kind`).
    pub fn from_table(table: toml::Table) -> Result<Self> {
        let config: Self = coffer_core::parse_table(table, "`k8s` source", HINT)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that exactly one of `names` and `selector` is given and that
    /// names are plausible.
    pub fn validate(&self) -> Result<()> {
        if !valid_name(&self.namespace) {
            return Err(
                config_error(format!("`{}` is not a Kubernetes namespace name", self.namespace))
                    .with_hint(HINT),
            );
        }
        match (&self.selector, self.names.is_empty()) {
            (Some(_), false) => {
                Err(config_error("a `k8s` source takes `names` or `selector`, not both").with_hint(HINT))
            }
            (None, true) => Err(config_error("a `k8s` source needs `names` or `selector`").with_hint(HINT)),
            (Some(s), true) if s.trim().is_empty() => {
                Err(config_error("the `selector` is empty").with_hint(HINT))
            }
            _ => match self.names.iter().find(|n| !valid_name(n)) {
                Some(bad) => {
                    Err(config_error(format!("`{bad}` is not a Kubernetes Secret name")).with_hint(HINT))
                }
                None => Ok(()),
            },
        }
    }
}

const HINT: &str = "a `k8s` source takes `namespace` and either `names = [\"secret\", …]` or \
                    `selector = \"app=x\"`, and optionally `kubeconfig` and `context`";

/// A DNS subdomain name (RFC 1123), as Kubernetes requires of Secret and
/// namespace names: it is also safe as a bundle path segment.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
}

/// The file stem a Secret named `name` is stored under (`<stem>.json`):
/// the name itself, or for names too long for a 255-byte file name with
/// `.json` (Secret names go up to 253), their first 200 characters, `~` and
/// 16 hex digits of the name's SHA-256 (`~` is never in a Secret name, so
/// the two forms cannot meet). The real name is in the stored manifest.
pub(crate) fn file_stem(name: &str) -> String {
    if name.len() + ".json".len() <= 255 {
        return name.to_string();
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(name.as_bytes());
    format!("{}~{}", &name[..200], hex::encode(&hash[..8]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_names_get_a_stem_that_fits_a_file_name() {
        let long = "a".repeat(253);
        let stem = super::file_stem(&long);
        assert!(stem.len() + 5 <= 255 && stem.contains('~'), "{stem}");
        assert_ne!(stem, super::file_stem(&format!("{}b", "a".repeat(252))));
        assert_eq!(super::file_stem("db-secrets"), "db-secrets");
    }

    use super::*;

    #[test]
    fn names_must_be_kubernetes_names() {
        for ok in ["a", "issuer-directory-secrets", "db.v2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "..", "a/b", "A", "-a", "a-", "a..b", "x y"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
