//! Trusted signers (`--trusted-signer` + `trusted-signers`) and what they
//! say about a snapshot.

use std::path::Path;

use coffer_core::{Result, keys::TrustState, keys::TrustedSigners, ops::CatalogEntry};

use crate::config::Config;

/// The trusted signers: `flags` (the command line's --trusted-signer) plus the config's
/// `trusted-signers` (files relative to the config's folder); when neither
/// names one, the public halves of the config's own `signing-key`s.
pub fn trusted_signers(flags: &[String], config: Option<&Config>) -> Result<TrustedSigners> {
    let mut t = TrustedSigners::new();
    for s in flags {
        t.add(s, Path::new("."))
            .map_err(|e| e.prefix("--trusted-signer"))?;
    }
    if let Some(c) = config {
        let base = c
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for s in &c.trusted_signers {
            t.add(s, base)
                .map_err(|e| e.prefix(format!("{}: trusted-signers", c.path.display())))?;
        }
        // A config that signs and names no trusted signers trusts its own
        // keys: there, a snapshot whose signature was stripped (or made by
        // another key) is refused. Signers named in the config or on the
        // command line are the whole list. A key file this host cannot read
        // (a restore host without it) adds nothing.
        let explicit = !c.trusted_signers.is_empty() || !flags.is_empty();
        let keys = c
            .signing_key
            .iter()
            .chain(c.jobs.values().filter_map(|j| j.signing_key.as_ref()))
            .filter(|_| !explicit);
        for path in keys {
            match coffer_core::keys::SigningKey::from_file(path) {
                Ok(key) => t.push(key.public()),
                Err(e) => tracing::debug!("not trusting the config's signing key {}: {e}", path.display()),
            }
        }
    }
    Ok(t)
}

/// Refuses a snapshot whose signature fails the trust policy; call it
/// before fetching or decrypting anything.
pub fn enforce(trust: &TrustedSigners, entry: &CatalogEntry) -> Result<TrustState> {
    trust.enforce(entry.index.id.as_str(), &entry.signature)
}

/// `signed` (trusted, or any valid signature when no signer is trusted),
/// `unsigned`, or `untrusted` (refused by restore: unsigned or untrusted
/// while signers are configured, or a bad signature).
pub fn signature_column(trust: &coffer_core::keys::TrustedSigners, e: &CatalogEntry) -> &'static str {
    match (enforce(trust, e), trust.judge(&e.signature)) {
        (Err(_), _) => "untrusted",
        (Ok(_), coffer_core::keys::TrustState::Unsigned) => "unsigned",
        (Ok(_), _) => "signed",
    }
}
