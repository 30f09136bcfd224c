//! Signed snapshots: Ed25519 signing keys, trusted signer keys, and the
//! `<id>.sig` signature file stored beside each public index.
//!
//! age proves who can *read* a bundle, not who *made* it: anyone with the
//! public recipient key can encrypt one. So the backup signs the exact
//! bytes of the public index `<id>.json` as stored — which include the
//! ciphertext's size and SHA-256 — and restore, verify and show check that
//! signature against the configured trusted signers before fetching the
//! ciphertext.
//!
//! # Formats
//!
//! - Public key: `coffer-sign-ed25519:<base64 of the 32-byte key>`, or an
//!   OpenSSH `ssh-ed25519 AAAA… [comment]` line (the same key type).
//! - Signing key file (`coffer keygen --signing`): comment lines and one
//!   `COFFER-SIGN-ED25519-SECRET-KEY:<base64 of the 32-byte seed>` line; or
//!   an unencrypted OpenSSH ed25519 private key.
//! - Fingerprint: `SHA256:<base64>` of the key's SSH wire form, exactly as
//!   `ssh-keygen -l` prints it, whichever form the key was given in.
//! - Signature file `<id>.sig`: JSON `{"format": "coffer-sig/1",
//!   "algorithm": "ed25519", "signer": "coffer-sign-ed25519:…",
//!   "signature": "<base64>"}`; the signature is over
//!   [`SIGNATURE_CONTEXT`] followed by the index bytes (the context keeps a
//!   reused SSH key's signature from meaning anything elsewhere).

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result, config_error};

/// Format tag of `<id>.sig`.
pub const SIGNATURE_FORMAT: &str = "coffer-sig/1";
/// Prefix of the signed message (followed by the index bytes).
pub const SIGNATURE_CONTEXT: &[u8] = b"coffer-index-signature/1\n";
/// Prefix of a public key in coffer's text form.
pub const PUBLIC_KEY_PREFIX: &str = "coffer-sign-ed25519:";
const SECRET_PREFIX: &str = "COFFER-SIGN-ED25519-SECRET-KEY:";
const SSH_ED25519: &str = "ssh-ed25519";

/// A public Ed25519 key whose signatures coffer can check.
#[derive(Clone, PartialEq, Eq)]
pub struct SignerKey {
    key: ed25519_dalek::VerifyingKey,
}

impl SignerKey {
    /// Parses `coffer-sign-ed25519:<base64>` or `ssh-ed25519 AAAA… [comment]`.
    pub fn parse(text: &str) -> Result<SignerKey> {
        let text = text.trim();
        if let Some(kind) = crate::crypto::secret_key_kind(text) {
            return Err(config_error(format!(
                "this is {kind}, not a signer's public key (it is not shown)"
            ))
            .with_hint(crate::crypto::public_half_hint(kind)));
        }
        let bad = |why: &str| {
            config_error(format!("not a valid signer key ({why}): `{}`", short(text))).with_hint(
                "use the public key `coffer keygen --signing` printed (coffer-sign-ed25519:…) or an ssh-ed25519 public key line",
            )
        };
        let raw: Vec<u8> = if let Some(b64) = text.strip_prefix(PUBLIC_KEY_PREFIX) {
            STANDARD.decode(b64.trim()).map_err(|_| bad("bad base64"))?
        } else if let Some(rest) = text.strip_prefix(SSH_ED25519) {
            let b64 = rest.split_whitespace().next().ok_or_else(|| bad("no key"))?;
            let blob = STANDARD.decode(b64).map_err(|_| bad("bad base64"))?;
            let mut r = SshReader(&blob);
            let kind = r.string().ok_or_else(|| bad("truncated"))?;
            if kind != SSH_ED25519.as_bytes() {
                return Err(bad("key type does not match"));
            }
            let key = r.string().ok_or_else(|| bad("truncated"))?.to_vec();
            if !r.0.is_empty() {
                return Err(bad("trailing bytes"));
            }
            key
        } else if text.starts_with("ssh-") || text.starts_with("ecdsa-") {
            return Err(bad("only ssh-ed25519 keys can sign snapshots"));
        } else {
            return Err(bad("unknown format"));
        };
        let bytes: [u8; 32] = raw.try_into().map_err(|_| bad("an Ed25519 key has 32 bytes"))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a curve point"))?;
        Ok(SignerKey { key })
    }

    /// coffer's text form, `coffer-sign-ed25519:<base64>`.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(self.key.as_bytes()))
    }

    /// The OpenSSH form, `ssh-ed25519 AAAA…`.
    pub fn to_ssh(&self) -> String {
        format!("{SSH_ED25519} {}", STANDARD.encode(self.ssh_blob()))
    }

    /// `SHA256:<base64>`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(self.ssh_blob()))
        )
    }

    fn ssh_blob(&self) -> Vec<u8> {
        let mut blob = Vec::with_capacity(51);
        put_string(&mut blob, SSH_ED25519.as_bytes());
        put_string(&mut blob, self.key.as_bytes());
        blob
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({})", self.fingerprint())
    }
}

impl fmt::Display for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A private Ed25519 signing key; never printed (`Debug` shows only the
/// public fingerprint).
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> SigningKey {
        SigningKey {
            key: ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// Reads a key file: coffer's format or an unencrypted OpenSSH ed25519
    /// private key. Errors never quote the file's content.
    pub fn from_file(path: &Path) -> Result<SigningKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::io(format!("reading signing key {}", path.display()), e)
                .with_hint("create one with `coffer keygen --signing -o FILE`")
        })?;
        Self::from_text(&text).map_err(|e| e.prefix(format!("signing key {}", path.display())))
    }

    /// Parses the text of a key file (see [`SigningKey::from_file`]).
    pub fn from_text(text: &str) -> Result<SigningKey> {
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            return parse_openssh(text);
        }
        for line in text.lines() {
            if let Some(b64) = line.trim().strip_prefix(SECRET_PREFIX) {
                let raw = STANDARD
                    .decode(b64.trim())
                    .map_err(|_| config_error("the secret key line is not valid base64"))?;
                let seed: [u8; 32] = raw
                    .try_into()
                    .map_err(|_| config_error("the secret key has the wrong length"))?;
                return Ok(SigningKey {
                    key: ed25519_dalek::SigningKey::from_bytes(&seed),
                });
            }
        }
        Err(config_error("not a signing key").with_hint(
            "use a file written by `coffer keygen --signing` or an unencrypted OpenSSH ed25519 private key",
        ))
    }

    /// Its public key.
    pub fn public(&self) -> SignerKey {
        SignerKey {
            key: self.key.verifying_key(),
        }
    }

    /// The key file text `coffer keygen --signing` writes.
    pub fn file_text(&self) -> String {
        let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
        format!(
            "# coffer signing key (Ed25519): keep it secret\n# created: {created}\n# public key: {}\n{SECRET_PREFIX}{}\n",
            self.public(),
            STANDARD.encode(self.key.to_bytes())
        )
    }

    /// Signs the exact bytes of a public index.
    pub fn sign_index(&self, index_bytes: &[u8]) -> SignatureFile {
        let sig = self.key.sign(&message(index_bytes));
        SignatureFile {
            format: SIGNATURE_FORMAT.into(),
            algorithm: "ed25519".into(),
            signer: self.public().to_text(),
            signature: STANDARD.encode(sig.to_bytes()),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public().fingerprint())
    }
}

fn message(index_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_CONTEXT.len() + index_bytes.len());
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.extend_from_slice(index_bytes);
    m
}

/// The content of `<id>.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// [`SIGNATURE_FORMAT`].
    pub format: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key (`coffer-sign-ed25519:…`).
    pub signer: String,
    /// The signature, base64.
    pub signature: String,
}

impl SignatureFile {
    /// The bytes stored as `<id>.sig`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("signature serializes");
        v.push(b'\n');
        v
    }
}

/// What the signature of a snapshot says, before any trust decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureState {
    /// No `<id>.sig` beside the index.
    Unsigned,
    /// A signature that verifies with the key it names.
    Valid(SignerKey),
    /// A signature file that is unreadable or does not verify: the index
    /// or the signature was changed after signing.
    Bad(String),
}

/// Checks `<id>.sig` (if any) against the exact index bytes.
pub fn check_signature(index_bytes: &[u8], sig_bytes: Option<&[u8]>) -> SignatureState {
    let Some(sig_bytes) = sig_bytes else {
        return SignatureState::Unsigned;
    };
    let file: SignatureFile = match serde_json::from_slice(sig_bytes) {
        Ok(f) => f,
        Err(e) => return SignatureState::Bad(format!("unreadable signature file: {e}")),
    };
    if file.format != SIGNATURE_FORMAT || file.algorithm != "ed25519" {
        return SignatureState::Bad(format!(
            "unsupported signature format `{}` / algorithm `{}`",
            file.format, file.algorithm
        ));
    }
    let signer = match SignerKey::parse(&file.signer) {
        Ok(k) => k,
        Err(_) => return SignatureState::Bad("the signature names an invalid signer key".into()),
    };
    let sig = match STANDARD
        .decode(file.signature.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    {
        Some(b) => ed25519_dalek::Signature::from_bytes(&b),
        None => return SignatureState::Bad("the signature is not 64 bytes of base64".into()),
    };
    match signer.key.verify(&message(index_bytes), &sig) {
        Ok(()) => SignatureState::Valid(signer),
        Err(_) => SignatureState::Bad(format!(
            "the signature by {} does not match the index (changed after signing)",
            signer.fingerprint()
        )),
    }
}

/// A snapshot's signature judged against the trusted signers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustState {
    /// Not signed.
    Unsigned,
    /// Signed by a trusted key (its fingerprint).
    Trusted(String),
    /// Validly signed by a key that is not trusted (its fingerprint).
    Untrusted(String),
    /// The signature does not verify (why).
    BadSignature(String),
}

impl TrustState {
    /// Stable name for output: `unsigned`, `trusted`, `untrusted-signer`, `bad-signature`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TrustState::Unsigned => "unsigned",
            TrustState::Trusted(_) => "trusted",
            TrustState::Untrusted(_) => "untrusted-signer",
            TrustState::BadSignature(_) => "bad-signature",
        }
    }

    /// The signer's fingerprint, when the signature verified.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            TrustState::Trusted(f) | TrustState::Untrusted(f) => Some(f),
            _ => None,
        }
    }
}

/// The signer keys whose snapshots are trusted. Empty: signatures are
/// still checked (a bad one is always refused) but unsigned snapshots pass.
#[derive(Debug, Clone, Default)]
pub struct TrustedSigners {
    keys: Vec<SignerKey>,
}

impl TrustedSigners {
    /// No trusted signer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key given as text (see [`SignerKey::parse`]) or as a file
    /// holding such lines (`#` comments and blank lines skipped); relative
    /// paths are resolved against `base`.
    pub fn add(&mut self, spec: &str, base: &Path) -> Result<()> {
        let spec = spec.trim();
        if spec.starts_with(PUBLIC_KEY_PREFIX)
            || spec.starts_with("ssh-")
            || crate::crypto::secret_key_kind(spec).is_some()
        {
            self.keys.push(SignerKey::parse(spec)?);
            return Ok(());
        }
        let path = base.join(spec);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            // A value that is no public key may be a pasted secret seed:
            // never echo one.
            let named = if crate::crypto::looks_like_key(spec) {
                crate::crypto::shown(spec)
            } else {
                path.display().to_string()
            };
            Error::io(format!("reading trusted signer file {named}"), e).with_hint(
                "a trusted signer is a public key (coffer-sign-ed25519:… or ssh-ed25519 …) or a file of them",
            )
        })?;
        if let Some(kind) = crate::crypto::secret_key_kind(&text) {
            return Err(config_error(format!(
                "trusted signer file {} holds {kind}, not a public key (it is not shown)",
                path.display()
            ))
            .with_hint(crate::crypto::public_half_hint(kind)));
        }
        let mut any = false;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            self.keys.push(
                SignerKey::parse(line)
                    .map_err(|e| e.prefix(format!("trusted signer file {}", path.display())))?,
            );
            any = true;
        }
        if !any {
            return Err(config_error(format!(
                "trusted signer file {} holds no key",
                path.display()
            )));
        }
        Ok(())
    }

    /// Adds a parsed key.
    pub fn push(&mut self, key: SignerKey) {
        self.keys.push(key);
    }

    /// Whether no signer is trusted (signatures are then not required).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[SignerKey] {
        &self.keys
    }

    /// Judges a signature.
    pub fn judge(&self, state: &SignatureState) -> TrustState {
        match state {
            SignatureState::Unsigned => TrustState::Unsigned,
            SignatureState::Bad(why) => TrustState::BadSignature(why.clone()),
            SignatureState::Valid(k) if self.keys.contains(k) => TrustState::Trusted(k.fingerprint()),
            SignatureState::Valid(k) => TrustState::Untrusted(k.fingerprint()),
        }
    }

    /// Judges a signature and refuses what must not be used: a bad
    /// signature always; an unsigned or untrusted one when signers are
    /// configured. The error is [`ErrorKind::Integrity`].
    pub fn enforce(&self, snapshot: &str, state: &SignatureState) -> Result<TrustState> {
        let trust = self.judge(state);
        let refuse = |msg: String| {
            Err(Error::new(ErrorKind::Integrity, msg)
                .with_context("snapshot", snapshot)
                .with_hint("the snapshot may be forged (anyone with the public recipient key can encrypt a bundle); use a snapshot signed by a trusted key, or check --trusted-signer / trusted-signers"))
        };
        match &trust {
            TrustState::BadSignature(why) => {
                refuse(format!("snapshot {snapshot} has a bad signature: {why}"))
            }
            TrustState::Unsigned if !self.is_empty() => refuse(format!(
                "snapshot {snapshot} is unsigned, but trusted signers are configured"
            )),
            TrustState::Untrusted(fp) if !self.is_empty() => refuse(format!(
                "snapshot {snapshot} is signed by {fp}, which is not a trusted signer"
            )),
            _ => Ok(trust),
        }
    }
}

impl TrustedSigners {
    /// Judges `entry`'s signature ([`TrustedSigners::enforce`]) and, when
    /// it may be used, returns its index as an [`AdmittedIndex`]: the only
    /// way to get one, and what [`crate::ops::restore`] takes, so a restore
    /// through the library cannot be handed an index nobody judged.
    pub fn admit(&self, entry: &crate::CatalogEntry) -> Result<AdmittedIndex> {
        let trust = self.enforce(entry.index.id.as_str(), &entry.signature)?;
        Ok(AdmittedIndex {
            index: entry.index.clone(),
            trust,
        })
    }
}

/// A snapshot's index whose signature [`TrustedSigners::admit`] judged and
/// let through (unsigned only where no signer is trusted).
#[derive(Debug, Clone)]
pub struct AdmittedIndex {
    index: crate::Index,
    trust: TrustState,
}

impl AdmittedIndex {
    /// The index.
    pub fn index(&self) -> &crate::Index {
        &self.index
    }

    /// What its signature says: [`TrustState::Trusted`] when a trusted
    /// signer signed it.
    pub fn trust(&self) -> &TrustState {
        &self.trust
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// Reads SSH wire-format fields.
struct SshReader<'a>(&'a [u8]);

impl<'a> SshReader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(s)
    }
}

/// Parses an unencrypted OpenSSH private key holding one ed25519 key
/// (PROTOCOL.key in OpenSSH's sources).
fn parse_openssh(text: &str) -> Result<SigningKey> {
    let bad = |why: &str| {
        config_error(format!("not a usable OpenSSH ed25519 private key: {why}"))
            .with_hint("use an unencrypted ed25519 key, or a coffer key from `coffer keygen --signing`")
    };
    let body: String = text
        .lines()
        .skip_while(|l| !l.contains("BEGIN OPENSSH PRIVATE KEY"))
        .skip(1)
        .take_while(|l| !l.contains("END OPENSSH PRIVATE KEY"))
        .map(str::trim)
        .collect();
    let blob = STANDARD.decode(body).map_err(|_| bad("bad base64"))?;
    let rest = blob
        .strip_prefix(b"openssh-key-v1\0")
        .ok_or_else(|| bad("bad magic"))?;
    let mut r = SshReader(rest);
    let truncated = || bad("truncated");
    let cipher = r.string().ok_or_else(truncated)?;
    let kdf = r.string().ok_or_else(truncated)?;
    let _kdf_options = r.string().ok_or_else(truncated)?;
    if cipher != b"none" || kdf != b"none" {
        return Err(bad(
            "it is protected by a passphrase, which coffer cannot prompt for during unattended backups",
        ));
    }
    if r.u32().ok_or_else(truncated)? != 1 {
        return Err(bad("it holds more than one key"));
    }
    let public_blob = r.string().ok_or_else(truncated)?;
    let private = r.string().ok_or_else(truncated)?;
    let mut p = SshReader(private);
    let (c1, c2) = (p.u32().ok_or_else(truncated)?, p.u32().ok_or_else(truncated)?);
    if c1 != c2 {
        return Err(bad("corrupt (check bytes differ)"));
    }
    if p.string().ok_or_else(truncated)? != SSH_ED25519.as_bytes() {
        return Err(bad(
            "it is not an ed25519 key (only ed25519 keys can sign snapshots)",
        ));
    }
    let public = p.string().ok_or_else(truncated)?;
    let secret = p.string().ok_or_else(truncated)?;
    if public.len() != 32 || secret.len() != 64 || &secret[32..] != public {
        return Err(bad("corrupt key fields"));
    }
    let seed: [u8; 32] = secret[..32].try_into().expect("32 bytes");
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut expect = SshReader(public_blob);
    let _ = expect.string();
    if key.verifying_key().as_bytes() != public || expect.string() != Some(public) {
        return Err(bad("its public and private halves do not match"));
    }
    Ok(SigningKey { key })
}

fn short(s: &str) -> String {
    if s.chars().count() > 32 {
        format!("{}…", s.chars().take(32).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by `ssh-keygen -t ed25519 -N '' -C ops@test` for this test only.
    const SSH_PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCfUtLt7IVDRNfV+qfzBzdIfQQeeyF0D5K5NU+l6ULkXAAAAJC9dxDNvXcQ
zQAAAAtzc2gtZWQyNTUxOQAAACCfUtLt7IVDRNfV+qfzBzdIfQQeeyF0D5K5NU+l6ULkXA
AAAEAyRkU0v+kqUkyVvAeUpfuc3Uwc1P6ftGpFmsfFBEQqIZ9S0u3shUNE19X6p/MHN0h9
BB57IXQPkrk1T6XpQuRcAAAACG9wc0B0ZXN0AQIDBAU=
-----END OPENSSH PRIVATE KEY-----
";
    const SSH_PUBLIC: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ9S0u3shUNE19X6p/MHN0h9BB57IXQPkrk1T6XpQuRc ops@test";

    #[test]
    fn sign_and_verify_roundtrip() {
        let k = SigningKey::generate();
        let index = b"{\n  \"id\": \"x\"\n}\n";
        let sig = k.sign_index(index).to_json();
        assert_eq!(
            check_signature(index, Some(&sig)),
            SignatureState::Valid(k.public())
        );
        assert_eq!(check_signature(index, None), SignatureState::Unsigned);
        // One byte of the index changed: refused.
        let mut tampered = index.to_vec();
        tampered[5] ^= 1;
        assert!(matches!(
            check_signature(&tampered, Some(&sig)),
            SignatureState::Bad(_)
        ));
        // A signature file naming another key: does not verify either.
        let mut f: SignatureFile = serde_json::from_slice(&sig).unwrap();
        f.signer = SigningKey::generate().public().to_text();
        assert!(matches!(
            check_signature(index, Some(&f.to_json())),
            SignatureState::Bad(_)
        ));
        assert!(matches!(
            check_signature(index, Some(b"garbage")),
            SignatureState::Bad(_)
        ));
    }

    #[test]
    fn key_file_roundtrip_and_no_secret_in_debug() {
        let k = SigningKey::generate();
        let text = k.file_text();
        let k2 = SigningKey::from_text(&text).unwrap();
        assert_eq!(k.public(), k2.public());
        assert!(text.contains(&k.public().to_text()));
        let secret_line = text.lines().find(|l| l.starts_with(SECRET_PREFIX)).unwrap();
        let secret = &secret_line[SECRET_PREFIX.len()..];
        assert!(!format!("{k:?}").contains(secret));
        assert!(SigningKey::from_text("hello").is_err());
    }

    #[test]
    fn secret_keys_given_as_trusted_signers_are_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let signing = SigningKey::generate().file_text();
        let age = crate::crypto::GeneratedKey::generate().file_text();
        for (text, kind) in [
            (signing.as_str(), "signing secret key"),
            (age.as_str(), "age secret key"),
            (SSH_PRIVATE, "private key"),
        ] {
            // The lines that hold secret material.
            let secret: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("-----"))
                .collect();
            let file = dir.path().join("key");
            std::fs::write(&file, text).unwrap();
            let mut specs = vec![file.to_str().unwrap()];
            if secret.len() == 1 {
                specs.push(secret[0]);
            }
            for spec in specs {
                let err = TrustedSigners::new().add(spec, dir.path()).unwrap_err();
                let shown = format!("{err} {}", err.hint().unwrap_or_default());
                assert!(shown.contains(kind), "{shown}");
                for line in &secret {
                    let chars: Vec<char> = line.chars().collect();
                    for w in chars.windows(6) {
                        let w: String = w.iter().collect();
                        assert!(!shown.contains(&w), "`{w}` of the secret in: {shown}");
                    }
                }
            }
        }
    }

    #[test]
    fn public_key_forms_agree() {
        let k = SigningKey::generate().public();
        let from_text = SignerKey::parse(&k.to_text()).unwrap();
        let from_ssh = SignerKey::parse(&format!("{} me@host", k.to_ssh())).unwrap();
        assert_eq!(from_text, k);
        assert_eq!(from_ssh, k);
        assert!(k.fingerprint().starts_with("SHA256:"));
        for bad in [
            "coffer-sign-ed25519:AAAA",
            "coffer-sign-ed25519:not base64!",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
            "age1qqq",
            "",
        ] {
            assert!(SignerKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn openssh_private_key_signs_for_its_public_key() {
        let k = SigningKey::from_text(SSH_PRIVATE).unwrap();
        let public = SignerKey::parse(SSH_PUBLIC).unwrap();
        assert_eq!(k.public(), public);
        // `ssh-keygen -lf` prints this fingerprint for the key.
        assert_eq!(
            public.fingerprint(),
            "SHA256:4ZcFzz2o04KA1CpJMSY0DCT+uVpmg4I8qwkgUsPUeBo"
        );
        let sig = k.sign_index(b"index").to_json();
        assert_eq!(
            check_signature(b"index", Some(&sig)),
            SignatureState::Valid(public)
        );
        // Corrupted: refused with a clear error and no key material.
        let broken = SSH_PRIVATE.replace("BB57IXQP", "BB57IXQQ");
        let err = SigningKey::from_text(&broken).unwrap_err().to_string();
        assert!(err.contains("OpenSSH"), "{err}");
        assert!(!err.contains("BB57"), "{err}");
    }

    #[test]
    fn trust_decisions() {
        let good = SigningKey::generate();
        let other = SigningKey::generate();
        let index = b"index bytes";
        let signed_good = check_signature(index, Some(&good.sign_index(index).to_json()));
        let signed_other = check_signature(index, Some(&other.sign_index(index).to_json()));
        let bad = check_signature(b"changed", Some(&good.sign_index(index).to_json()));

        let none = TrustedSigners::new();
        assert_eq!(
            none.enforce("s", &SignatureState::Unsigned).unwrap(),
            TrustState::Unsigned
        );
        assert!(matches!(
            none.enforce("s", &signed_other).unwrap(),
            TrustState::Untrusted(_)
        ));
        assert_eq!(none.enforce("s", &bad).unwrap_err().kind(), ErrorKind::Integrity);

        let mut trusted = TrustedSigners::new();
        trusted.add(&good.public().to_ssh(), Path::new(".")).unwrap();
        assert_eq!(
            trusted.enforce("s", &signed_good).unwrap(),
            TrustState::Trusted(good.public().fingerprint())
        );
        for refused in [&SignatureState::Unsigned, &signed_other, &bad] {
            let e = trusted.enforce("s", refused).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity);
        }
        let e = trusted.enforce("s", &signed_other).unwrap_err().to_string();
        assert!(
            e.contains(&other.public().fingerprint()) && e.contains("not a trusted signer"),
            "{e}"
        );
    }

    /// A restore through the library takes an `AdmittedIndex`, which only
    /// `admit` makes: an unsigned or wrongly signed index is refused there
    /// (an integrity error) when signers are trusted.
    #[cfg(feature = "testkit")]
    #[test]
    fn only_admitted_indexes_reach_a_restore() {
        let id: crate::SnapshotId = "20261127T221500Z-3f9a1c2e".parse().unwrap();
        let index = crate::bundle::test_index(&id, b"abc");
        let bytes = index.to_json();
        let good = SigningKey::generate();
        let other = SigningKey::generate();
        let entry = |signature| crate::CatalogEntry {
            index: index.clone(),
            state: crate::SnapshotState::Complete,
            pinned: false,
            companions: Vec::new(),
            signature,
        };
        let mut trusted = TrustedSigners::new();
        trusted.push(good.public());
        for refused in [
            SignatureState::Unsigned,
            check_signature(&bytes, Some(&other.sign_index(&bytes).to_json())),
        ] {
            let e = trusted.admit(&entry(refused)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
        let admitted = trusted
            .admit(&entry(check_signature(
                &bytes,
                Some(&good.sign_index(&bytes).to_json()),
            )))
            .unwrap();
        assert!(matches!(admitted.trust(), TrustState::Trusted(_)));
        assert_eq!(admitted.index().id, id);
        let unsigned = TrustedSigners::new()
            .admit(&entry(SignatureState::Unsigned))
            .unwrap();
        assert_eq!(unsigned.trust(), &TrustState::Unsigned);
    }

    #[test]
    fn trusted_signer_files() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::generate().public();
        std::fs::write(
            dir.path().join("signers"),
            format!("# ops\n{}\n\n{SSH_PUBLIC}\n", k),
        )
        .unwrap();
        let mut t = TrustedSigners::new();
        t.add("signers", dir.path()).unwrap();
        assert_eq!(t.keys().len(), 2);
        assert!(t.add("missing", dir.path()).is_err());
        std::fs::write(dir.path().join("empty"), "# nothing\n").unwrap();
        assert!(t.add("empty", dir.path()).is_err());
    }
}
