//! age encryption: parsing recipients and identity files, key generation,
//! and public fingerprints of recipients for the index.
//!
//! Supported recipients: X25519 (`age1…`), `ssh-ed25519` and `ssh-rsa`
//! public keys, several at once; or a passphrase (scrypt), which age
//! requires to be the only recipient. Identities: age identity files
//! (`AGE-SECRET-KEY-1…` lines) and unencrypted OpenSSH private keys.

use std::fmt;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result, config_error};

/// A public key a bundle is encrypted to.
#[derive(Clone)]
pub struct RecipientKey {
    text: String,
}

impl RecipientKey {
    /// Parses `age1…`, `ssh-ed25519 AAAA… [comment]` or `ssh-rsa AAAA… [comment]`.
    pub fn parse(text: &str) -> Result<RecipientKey> {
        let text = text.trim();
        let ok = if text.starts_with("age1") {
            age::x25519::Recipient::from_str(text).is_ok()
        } else if text.starts_with("ssh-") {
            ssh_recipient(text)?.is_some()
        } else {
            false
        };
        if let Some(kind) = secret_key_kind(text) {
            return Err(
                config_error(format!("this is {kind}, not a recipient (it is not shown)"))
                    .with_hint(public_half_hint(kind)),
            );
        }
        if !ok {
            return Err(config_error(format!("not a valid recipient: `{}`", short(text))).with_hint(
                "use an age public key (age1…, from `coffer keygen`) or an ssh-ed25519 / ssh-rsa public key line",
            ));
        }
        Ok(RecipientKey {
            text: text.to_string(),
        })
    }

    /// The key as written by the user.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A short public fingerprint for indexes: `age:` or `ssh:` and the
    /// first 16 hex digits of the SHA-256 of the key (without any comment).
    pub fn fingerprint(&self) -> String {
        let (tag, key) = if self.text.starts_with("age1") {
            ("age", self.text.as_str())
        } else {
            let mut parts = self.text.split_whitespace();
            let _ = parts.next();
            ("ssh", parts.next().unwrap_or(""))
        };
        format!("{tag}:{}", &hex::encode(Sha256::digest(key.as_bytes()))[..16])
    }

    fn to_age(&self) -> Box<dyn age::Recipient + Send> {
        if self.text.starts_with("age1") {
            Box::new(age::x25519::Recipient::from_str(&self.text).expect("validated"))
        } else {
            ssh_recipient(&self.text).ok().flatten().expect("validated")
        }
    }
}

/// An `ssh-…` public key line as an age recipient (`None`: not a valid
/// one); an error where coffer was built without SSH keys.
#[cfg(feature = "ssh")]
fn ssh_recipient(text: &str) -> Result<Option<Box<dyn age::Recipient + Send>>> {
    Ok(age::ssh::Recipient::from_str(text)
        .ok()
        .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>))
}

#[cfg(not(feature = "ssh"))]
fn ssh_recipient(_: &str) -> Result<Option<Box<dyn age::Recipient + Send>>> {
    Err(no_ssh("SSH public keys as recipients"))
}

/// The error where coffer was built without its `ssh` feature.
#[cfg(not(feature = "ssh"))]
fn no_ssh(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("{what} need coffer built with its `ssh` feature, which this build leaves out"),
    )
    .with_hint("use an age key (`coffer keygen`), or the coffer binary (it has the feature), or build with `coffer-core/ssh`")
}

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientKey({})", self.fingerprint())
    }
}

/// What kind of secret `text` is, if it is (or looks like) private key
/// material: an age identity, a coffer signing key, an OpenSSH or PEM
/// private key. Errors about such text never echo any part of it.
pub fn secret_key_kind(text: &str) -> Option<&'static str> {
    let upper = text.to_ascii_uppercase();
    if upper.contains("AGE-SECRET-KEY-") {
        Some("an age secret key")
    } else if upper.contains("AGE-PLUGIN-") {
        Some("an age plugin identity")
    } else if upper.contains("COFFER-SIGN-ED25519-SECRET-KEY") {
        Some("a coffer signing secret key")
    } else if upper.contains("PRIVATE KEY") || upper.contains("-----BEGIN") {
        Some("a private key (OpenSSH or PEM)")
    } else {
        None
    }
}

/// How to get the public half of a secret of `kind` (from
/// [`secret_key_kind`]).
pub fn public_half_hint(kind: &str) -> &'static str {
    if kind.contains("age") {
        "pass its public recipient instead: `age-keygen -y KEYFILE` prints it (age1…), as `coffer keygen` did; keep the secret key off this command line"
    } else if kind.contains("signing") {
        "pass the public key instead: the `coffer-sign-ed25519:…` line `coffer keygen --signing` printed"
    } else {
        "pass the public key instead: `ssh-keygen -y -f KEYFILE` prints it"
    }
}

/// Whether `s` looks like key material that must not be echoed: secret
/// key text ([`secret_key_kind`]), or a bare run of 20 or more base64 or
/// base64url characters mixing upper case, lower case and digits (a
/// signing seed, a raw key; a public age recipient is lower case only and
/// stays readable). Errors show such values by position or length only.
pub fn looks_like_key(s: &str) -> bool {
    let s = s.trim();
    if secret_key_kind(s).is_some() {
        return true;
    }
    s.len() >= 20
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'))
        && s.bytes().any(|b| b.is_ascii_uppercase())
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && s.bytes().any(|b| b.is_ascii_digit())
}

/// `s` for an error message: itself, or `<N characters, not shown>` when
/// it [`looks_like_key`].
pub fn shown(s: &str) -> String {
    if looks_like_key(s) {
        format!("<{} characters, not shown: it may be a key>", s.chars().count())
    } else {
        s.to_string()
    }
}

fn short(s: &str) -> String {
    if looks_like_key(s) {
        shown(s)
    } else if s.chars().count() > 24 {
        format!("{}…", s.chars().take(24).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A passphrase; never printed.
#[derive(Clone)]
pub struct Passphrase(SecretString);

impl Passphrase {
    /// Wraps a passphrase; empty ones are refused.
    pub fn new(text: String) -> Result<Passphrase> {
        if text.is_empty() {
            return Err(config_error("the passphrase is empty"));
        }
        Ok(Passphrase(SecretString::from(text)))
    }

    /// Reads it from `bytes` (a passphrase file), trimming one trailing newline.
    pub fn from_file(path: &Path) -> Result<Passphrase> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading passphrase file {}", path.display()), e))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        Passphrase::new(text.to_string())
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// How a bundle is encrypted.
#[derive(Debug, Clone)]
pub enum Encryption {
    /// To one or more public keys.
    Recipients(Vec<RecipientKey>),
    /// With a passphrase (scrypt with work factor `2^log_n`).
    Passphrase {
        /// The passphrase.
        passphrase: Passphrase,
        /// scrypt log2(N); 18 is age's usual (~1 s here), chosen for
        /// removable media restored by people without key infrastructure.
        log_n: u8,
    },
}

/// The scrypt work factor used for passphrase bundles: 2^18, which takes
/// about a second and 256 MiB to derive on these machines.
pub const DEFAULT_SCRYPT_LOG_N: u8 = 18;

impl Encryption {
    /// Checks there is at least one recipient.
    pub fn validate(&self) -> Result<()> {
        if let Encryption::Recipients(r) = self
            && r.is_empty()
        {
            return Err(config_error("no recipient configured: a bundle must be encrypted to someone")
                .with_hint("add `--recipient age1…` (see `coffer keygen`), `recipients = [..]` in the job, or `--passphrase`"));
        }
        Ok(())
    }

    /// The public description for the index: mode and recipient fingerprints.
    pub fn describe(&self) -> (String, Vec<String>) {
        match self {
            Encryption::Recipients(r) => ("recipients".into(), r.iter().map(|r| r.fingerprint()).collect()),
            Encryption::Passphrase { log_n, .. } => (format!("passphrase-scrypt-{log_n}"), vec![]),
        }
    }

    /// Wraps `out` in an age encryptor.
    pub fn encrypt<W: Write>(&self, out: W) -> Result<age::stream::StreamWriter<W>> {
        let encryptor = match self {
            Encryption::Recipients(keys) => {
                self.validate()?;
                let boxed: Vec<Box<dyn age::Recipient + Send>> = keys.iter().map(|k| k.to_age()).collect();
                age::Encryptor::with_recipients(boxed.iter().map(|b| b.as_ref() as &dyn age::Recipient))
                    .map_err(|e| config_error(format!("cannot encrypt to these recipients: {e}")))?
            }
            Encryption::Passphrase { passphrase, log_n } => {
                let mut r = age::scrypt::Recipient::new(passphrase.0.clone());
                r.set_work_factor(*log_n);
                age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
                    .map_err(|e| config_error(format!("cannot encrypt with passphrase: {e}")))?
            }
        };
        encryptor
            .wrap_output(out)
            .map_err(|e| Error::io("writing the age header", e))
    }
}

/// Keys that can decrypt bundles: identity files and/or a passphrase.
#[derive(Default)]
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    files: Vec<PathBuf>,
    /// Fingerprints of the recipients of the age identities (as `coffer
    /// show` lists an index's recipients), for a wrong-key error.
    fingerprints: Vec<String>,
    passphrase: Option<Passphrase>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("files", &self.files)
            .field("keys", &self.keys.len())
            .field("passphrase", &self.passphrase.is_some())
            .finish()
    }
}

impl Identities {
    /// No keys yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no key or passphrase was added.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.passphrase.is_none()
    }

    /// Adds the identities of an age identity file or an unencrypted
    /// OpenSSH private key file.
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        let mut data = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| {
                Error::io(format!("reading identity file {}", path.display()), e).with_hint(
                    "pass the key written by `coffer keygen -o FILE` (or an SSH private key) with --identity",
                )
            })?;
        let text = String::from_utf8_lossy(&data);
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
            || text.contains("-----BEGIN RSA PRIVATE KEY-----")
        {
            return self.add_ssh(path, &data);
        }
        let file = age::IdentityFile::from_buffer(BufReader::new(&data[..])).map_err(|e| {
            config_error(format!("{} is not an age identity file: {e}", path.display())).with_hint(
                "an identity file holds AGE-SECRET-KEY-1… lines; `coffer keygen -o FILE` writes one",
            )
        })?;
        let ids = file
            .into_identities()
            .map_err(|e| config_error(format!("{} holds an unusable identity: {e}", path.display())))?;
        if ids.is_empty() {
            return Err(config_error(format!("{} holds no identity", path.display())));
        }
        self.fingerprints.extend(
            text.lines()
                .filter_map(|l| age::x25519::Identity::from_str(l.trim()).ok())
                .filter_map(|id| RecipientKey::parse(&id.to_public().to_string()).ok())
                .map(|r| r.fingerprint()),
        );
        self.keys.extend(ids);
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// Adds an unencrypted OpenSSH (or PEM RSA) private key file's key.
    #[cfg(feature = "ssh")]
    fn add_ssh(&mut self, path: &Path, data: &[u8]) -> Result<()> {
        let id = age::ssh::Identity::from_buffer(BufReader::new(data), Some(path.display().to_string()))
            .map_err(|e| config_error(format!("{} is not a usable SSH private key: {e}", path.display())))?;
        match id {
            age::ssh::Identity::Unencrypted(_) => self.keys.push(Box::new(id)),
            age::ssh::Identity::Encrypted(_) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("the SSH key {} is passphrase-protected", path.display()),
                )
                .with_hint(
                    "use an unencrypted copy kept offline (ssh-keygen -p -N '' -f COPY) or an age identity",
                ));
            }
            age::ssh::Identity::Unsupported(k) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("unsupported SSH key type in {}: {k:?}", path.display()),
                )
                .with_hint("age supports ssh-ed25519 and ssh-rsa keys"));
            }
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }

    #[cfg(not(feature = "ssh"))]
    fn add_ssh(&mut self, _: &Path, _: &[u8]) -> Result<()> {
        Err(no_ssh("SSH private keys as identities"))
    }

    /// Adds a passphrase for passphrase-encrypted bundles.
    pub fn set_passphrase(&mut self, passphrase: Passphrase) {
        self.passphrase = Some(passphrase);
    }

    /// Whether a passphrase was given.
    pub fn has_passphrase(&self) -> bool {
        self.passphrase.is_some()
    }

    /// Opens an age stream for reading with these keys.
    pub fn decrypt<R: Read>(&self, input: R) -> Result<age::stream::StreamReader<R>> {
        let decryptor = age::Decryptor::new(input).map_err(|e| map_decrypt_error(e, self))?;
        if decryptor.is_scrypt() {
            let Some(p) = &self.passphrase else {
                return Err(
                    Error::new(ErrorKind::Decryption, "this bundle is passphrase-encrypted")
                        .with_hint("pass --passphrase (or set COFFER_PASSPHRASE / --passphrase-file)"),
                );
            };
            let mut id = age::scrypt::Identity::new(p.0.clone());
            id.set_max_work_factor(22);
            decryptor
                .decrypt(std::iter::once(&id as &dyn age::Identity))
                .map_err(|e| map_decrypt_error(e, self))
        } else {
            if self.keys.is_empty() {
                return Err(
                    Error::new(ErrorKind::Decryption, "no identity given to decrypt this bundle")
                        .with_hint("pass --identity FILE (an age identity file or SSH private key)"),
                );
            }
            decryptor
                .decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
                .map_err(|e| map_decrypt_error(e, self))
        }
    }
}

fn map_decrypt_error(e: age::DecryptError, ids: &Identities) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => {
            let files: Vec<String> = ids.files.iter().map(|p| p.display().to_string()).collect();
            let mut message = "none of the given identities can decrypt this bundle".to_string();
            if !ids.fingerprints.is_empty() {
                message.push_str(&format!(
                    " (they are the keys of recipients {}; `coffer show` lists the snapshot's)",
                    ids.fingerprints.join(", ")
                ));
            }
            Error::new(ErrorKind::Decryption, message)
                .with_context("identities", files.join(", "))
                .with_hint("use the identity whose public key the job encrypts to (`coffer show` lists recipient fingerprints)")
        }
        age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
            if ids.passphrase.is_some() {
                Error::new(
                    ErrorKind::Decryption,
                    "wrong passphrase, or the bundle is corrupt",
                )
            } else {
                Error::new(
                    ErrorKind::Integrity,
                    "decryption failed: the bundle is corrupt or truncated",
                )
            }
        }
        age::DecryptError::ExcessiveWork { required, .. } => Error::new(
            ErrorKind::Decryption,
            format!("the bundle's scrypt work factor 2^{required} is above the accepted maximum"),
        ),
        age::DecryptError::InvalidHeader
        | age::DecryptError::UnknownFormat
        | age::DecryptError::InvalidMac => {
            Error::new(ErrorKind::Integrity, format!("not a valid age file: {e}"))
        }
        age::DecryptError::Io(io) => Error::io("reading the bundle", io),
        other => Error::new(ErrorKind::Decryption, format!("cannot decrypt: {other}")),
    }
}

/// A freshly generated age identity.
pub struct GeneratedKey {
    identity: age::x25519::Identity,
}

impl GeneratedKey {
    /// Generates a new X25519 identity.
    pub fn generate() -> Self {
        GeneratedKey {
            identity: age::x25519::Identity::generate(),
        }
    }

    /// The public recipient (`age1…`).
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    /// The identity file text (comment lines + `AGE-SECRET-KEY-1…`), as
    /// `age-keygen` writes it.
    pub fn file_text(&self) -> String {
        let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
        format!(
            "# created: {created}\n# public key: {}\n{}\n",
            self.recipient(),
            self.identity.to_string().expose_secret()
        )
    }
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneratedKey({})", self.recipient())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_x25519_and_wrong_key() {
        let k1 = GeneratedKey::generate();
        let k2 = GeneratedKey::generate();
        let enc = Encryption::Recipients(vec![RecipientKey::parse(&k1.recipient()).unwrap()]);
        let mut out = Vec::new();
        let mut w = enc.encrypt(&mut out).unwrap();
        w.write_all(b"hello").unwrap();
        w.finish().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let f1 = dir.path().join("k1");
        std::fs::write(&f1, k1.file_text()).unwrap();
        let f2 = dir.path().join("k2");
        std::fs::write(&f2, k2.file_text()).unwrap();

        let mut ids = Identities::new();
        ids.add_file(&f1).unwrap();
        let mut plain = String::new();
        ids.decrypt(&out[..]).unwrap().read_to_string(&mut plain).unwrap();
        assert_eq!(plain, "hello");

        let mut wrong = Identities::new();
        wrong.add_file(&f2).unwrap();
        let err = wrong.decrypt(&out[..]).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Decryption);
        assert!(err.to_string().contains("k2"));
    }

    #[test]
    fn passphrase_roundtrip() {
        let p = Passphrase::new("correct horse".into()).unwrap();
        let enc = Encryption::Passphrase {
            passphrase: p.clone(),
            log_n: 10,
        };
        let mut out = Vec::new();
        let mut w = enc.encrypt(&mut out).unwrap();
        w.write_all(b"data").unwrap();
        w.finish().unwrap();
        let mut ids = Identities::new();
        ids.set_passphrase(Passphrase::new("wrong".into()).unwrap());
        assert_eq!(ids.decrypt(&out[..]).err().unwrap().kind(), ErrorKind::Decryption);
        ids.set_passphrase(p);
        let mut s = String::new();
        ids.decrypt(&out[..]).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "data");
        assert!(!format!("{enc:?}").contains("horse"));
    }

    #[test]
    fn recipients_parse() {
        assert!(RecipientKey::parse("age1nope").is_err());
        let k = GeneratedKey::generate();
        let r = RecipientKey::parse(&k.recipient()).unwrap();
        assert!(r.fingerprint().starts_with("age:"));
        let ssh =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";
        #[cfg(feature = "ssh")]
        assert!(
            RecipientKey::parse(ssh)
                .unwrap()
                .fingerprint()
                .starts_with("ssh:")
        );
        #[cfg(not(feature = "ssh"))]
        assert_eq!(
            RecipientKey::parse(ssh).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert!(Encryption::Recipients(vec![]).validate().is_err());
    }

    #[test]
    fn secret_keys_given_as_recipients_are_never_echoed() {
        let k = GeneratedKey::generate();
        let text = k.file_text();
        let secret = text.lines().last().unwrap();
        let body = &secret["AGE-SECRET-KEY-1".len()..];
        for given in [secret, secret.to_lowercase().as_str(), text.as_str()] {
            let err = RecipientKey::parse(given).unwrap_err();
            let shown = format!("{err} {}", err.hint().unwrap_or_default());
            assert!(shown.contains("age secret key"), "{shown}");
            assert!(shown.contains("age-keygen -y"), "{shown}");
            assert!(!shown.contains("AGE-SECRET-KEY-1"), "{shown}");
            assert!(!shown.to_uppercase().contains(&body[..4]), "{shown}");
        }
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n";
        let err = RecipientKey::parse(pem).unwrap_err();
        assert!(!err.to_string().contains("b3Bl"), "{err}");
        assert!(err.to_string().contains("private key"), "{err}");
    }
}
