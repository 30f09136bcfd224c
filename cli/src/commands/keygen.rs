//! `coffer keygen`: an age identity, an SSH recipient check, or a signing key.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use coffer_core::ops::{KeygenOutcome, SignerKeygenOutcome};
use coffer_core::{Error, config_error, keys::GeneratedKey, keys::RecipientKey, keys::SigningKey};

use crate::ctx::{CmdResult, Ctx, write_new_private};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the identity to FILE (mode 0600; refuses to overwrite).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Instead of generating: check an SSH public key file (ssh-ed25519 or
    /// ssh-rsa) and print it as a recipient. Its private key then works with
    /// --identity.
    #[arg(long, value_name = "PUBKEY_FILE", conflicts_with = "signing")]
    pub ssh: Option<PathBuf>,
    /// Generate an Ed25519 signing key instead (for `signing-key` /
    /// --signing-key); prints its public key coffer-sign-ed25519:… to
    /// trust (`trusted-signers` / --trusted-signer).
    #[arg(long)]
    pub signing: bool,
}

pub(crate) fn exec(ctx: &Ctx, a: KeygenArgs) -> CmdResult {
    if a.signing {
        return keygen_signing(ctx, a.output.as_deref());
    }
    if let Some(pubfile) = a.ssh {
        let text = std::fs::read_to_string(&pubfile)
            .map_err(|e| Error::io(format!("reading {}", pubfile.display()), e))?;
        let key = RecipientKey::parse(text.trim())?;
        if ctx.json {
            print_json(&KeygenOutcome {
                recipient: key.as_str().to_string(),
                fingerprint: key.fingerprint(),
                identity_file: None,
            });
        } else {
            println!("{}", key.as_str());
        }
        return Ok(());
    }
    if ctx.json && a.output.is_none() {
        return Err(config_error(
            "--json needs -o FILE: the private key must go to a file, not into JSON output",
        )
        .into());
    }
    let key = GeneratedKey::generate();
    match &a.output {
        Some(path) => write_new_private(path, key.file_text().as_bytes())?,
        None => {
            if std::io::stdout().is_terminal() && !ctx.json {
                eprintln!("warning: writing a private key to the terminal; use -o FILE to store it");
            }
            if !ctx.json {
                print!("{}", key.file_text());
                return Ok(());
            }
        }
    }
    // The fingerprint is what indexes, `coffer show` and the wrong-key
    // hint name the recipient by.
    let fingerprint = RecipientKey::parse(&key.recipient())?.fingerprint();
    if ctx.json {
        print_json(&KeygenOutcome {
            recipient: key.recipient(),
            fingerprint,
            identity_file: a.output.as_ref().map(|p| p.display().to_string()),
        });
    } else {
        println!("{}", key.recipient());
        if let Some(p) = &a.output {
            eprintln!(
                "identity written to {} (mode 0600); keep it off the backed-up host",
                p.display()
            );
        }
        eprintln!("fingerprint: {fingerprint} (as indexes and `coffer show` name this recipient)");
    }
    Ok(())
}

/// `coffer keygen --signing`.
pub(crate) fn keygen_signing(ctx: &Ctx, output: Option<&Path>) -> CmdResult {
    let Some(path) = output else {
        return Err(config_error(
            "--signing needs -o FILE: a signing key is written to a file, never printed",
        )
        .with_hint("coffer keygen --signing -o sign.key")
        .into());
    };
    let key = SigningKey::generate();
    write_new_private(path, key.file_text().as_bytes())?;
    let public = key.public();
    if ctx.json {
        print_json(&SignerKeygenOutcome {
            signer: public.to_text(),
            ssh: public.to_ssh(),
            fingerprint: public.fingerprint(),
            signing_key_file: path.display().to_string(),
        });
    } else {
        println!("{public}");
        eprintln!(
            "signing key written to {} (mode 0600); trust its public key above with `trusted-signers` or --trusted-signer ({})",
            path.display(),
            public.fingerprint()
        );
    }
    Ok(())
}
