//! Keys from flags and config: identities, passphrases, signing keys,
//! and writing a new private key file.

use std::io::IsTerminal;
use std::path::Path;

use coffer_core::{Error, ErrorKind, Result, config_error, keys::Identities, keys::Passphrase};

use super::KeySel;

/// Creates `path` with mode 0600, refusing to overwrite.
pub(crate) fn write_new_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            let err = Error::io(format!("creating {}", path.display()), e);
            if err.kind() == ErrorKind::AlreadyExists {
                err.with_hint("refusing to overwrite a key; choose another file name")
            } else {
                err
            }
        })?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

pub(crate) fn passphrase(file: Option<&Path>, confirm: bool) -> Result<Passphrase> {
    if let Some(f) = file {
        return Passphrase::from_file(f);
    }
    if let Ok(p) = std::env::var("COFFER_PASSPHRASE") {
        return Passphrase::new(p);
    }
    if std::io::stdin().is_terminal() {
        let p =
            rpassword::prompt_password("passphrase: ").map_err(|e| Error::io("reading the passphrase", e))?;
        if confirm {
            let again = rpassword::prompt_password("passphrase (again): ")
                .map_err(|e| Error::io("reading the passphrase", e))?;
            if again != p {
                return Err(config_error("the passphrases differ"));
            }
        }
        return Passphrase::new(p);
    }
    Err(config_error("a passphrase is needed but none was given")
        .with_hint("set COFFER_PASSPHRASE, pass --passphrase-file FILE, or run on a terminal"))
}

pub(crate) fn identities(keys: &KeySel) -> Result<Identities> {
    let mut ids = Identities::new();
    for f in &keys.identities {
        ids.add_file(f)?;
    }
    if keys.passphrase || keys.passphrase_file.is_some() {
        ids.set_passphrase(passphrase(keys.passphrase_file.as_deref(), false)?);
    }
    Ok(ids)
}

/// A new passphrase for a backup: from `file`, else `COFFER_PASSPHRASE`,
/// else asked twice on the terminal.
pub(crate) fn new_passphrase(file: Option<&Path>) -> Result<Passphrase> {
    passphrase(file, true)
}
