//! Reading a runbook backup: decrypt, gunzip and untar as one stream into
//! spills, then check every `SHA256SUMS` line.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{damaged, stream_error};
use coffer_core::spill::{Spill, SpillBody};
use coffer_core::{Error, Result, keys::Identities};

/// Bytes of one member kept in memory before spilling (encrypted).
const MEMORY_LIMIT: usize = 8 << 20;
/// Largest `SHA256SUMS` read.
const MAX_SUMS: u64 = 1 << 20;
const SUMS: &str = "SHA256SUMS";

/// One regular file of the tar.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) mode: u32,
    pub(crate) mtime: i64,
    pub(crate) body: SpillBody,
}

/// The verified content of a runbook backup.
pub(crate) struct Extracted {
    pub(crate) members: Vec<Member>,
    /// Lines of SHA256SUMS checked.
    pub(crate) checked: usize,
}

/// Decrypts, gunzips and untars `file` into spills, then checks every
/// `SHA256SUMS` line.
pub(crate) fn extract(file: &Path, ids: &Identities) -> Result<Extracted> {
    let gz = flate2::read::GzDecoder::new(decrypt_file(file, ids)?);
    let mut archive = tar::Archive::new(gz);
    let mut members: Vec<Member> = Vec::new();
    let mut sums: Option<Vec<u8>> = None;
    let entries = archive.entries().map_err(|e| stream_error(e, file))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| stream_error(e, file))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw.trim_start_matches("./").trim_end_matches('/').to_string();
        let kind = entry.header().entry_type();
        if skip_member(kind, &raw, &name, &members, sums.is_some(), file)? {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0) as i64;
        if name == SUMS {
            sums = Some(read_sums(&mut entry, file)?);
            continue;
        }
        let body = spill_member(&mut entry, file)?;
        members.push(Member {
            name,
            mode,
            mtime,
            body,
        });
    }
    let Some(sums) = sums else {
        return Err(damaged("the backup holds no SHA256SUMS", file).with_hint(
            "the runbook writes SHA256SUMS before encrypting; without it nothing can be checked",
        ));
    };
    let checked = check_sums(&sums, &members, file)?;
    Ok(Extracted { members, checked })
}

/// Opens and decrypts `file`, checking that what it holds starts like a
/// gzip stream.
fn decrypt_file(file: &Path, ids: &Identities) -> Result<impl Read> {
    let input = File::open(file).map_err(|e| {
        Error::io(format!("cannot open {}", file.display()), e)
            .with_hint("give the runbook's <BACKUP_DIR>.tar.gz.age file")
    })?;
    let plain = ids.decrypt(BufReader::with_capacity(256 * 1024, input))?;
    let mut plain = BufReader::with_capacity(256 * 1024, plain);
    {
        use std::io::BufRead;
        let head = plain.fill_buf().map_err(|e| stream_error(e, file))?;
        if !head.starts_with(&[0x1f, 0x8b]) {
            return Err(damaged("the decrypted content is not a tar.gz", file)
                .with_hint("give the file written by the runbook's `tar czf … && age -r …`"));
        }
    }
    Ok(plain)
}

/// Whether a tar member is skipped (the top directory, pax headers); an
/// error for one that is not a regular file with a flat, safe name seen
/// once.
fn skip_member(
    kind: tar::EntryType,
    raw: &str,
    name: &str,
    members: &[Member],
    has_sums: bool,
    file: &Path,
) -> Result<bool> {
    if kind.is_dir() && (name.is_empty() || name == ".") {
        return Ok(true);
    }
    if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
        return Ok(true);
    }
    if !kind.is_file() {
        return Err(damaged(
            format!("unexpected tar member `{raw}` (not a regular file)"),
            file,
        )
        .with_hint("the runbook writes a flat directory of files; check the backup by hand"));
    }
    if name.is_empty() || name.contains('/') || name == ".." {
        return Err(damaged(
            format!("unexpected tar member `{raw}` (a nested or unsafe path)"),
            file,
        ));
    }
    if members.iter().any(|m| m.name == name) || (name == SUMS && has_sums) {
        return Err(damaged(format!("the tar holds `{name}` twice"), file));
    }
    Ok(false)
}

/// Reads the `SHA256SUMS` member, refusing one over `MAX_SUMS` bytes.
fn read_sums(entry: &mut impl Read, file: &Path) -> Result<Vec<u8>> {
    let mut text = Vec::new();
    entry
        .take(MAX_SUMS + 1)
        .read_to_end(&mut text)
        .map_err(|e| stream_error(e, file))?;
    if text.len() as u64 > MAX_SUMS {
        return Err(damaged("SHA256SUMS is over 1 MiB", file));
    }
    Ok(text)
}

/// Copies a member into a spill (in memory, or an encrypted temp file
/// past `MEMORY_LIMIT`).
fn spill_member(entry: &mut impl Read, file: &Path) -> Result<SpillBody> {
    let mut spill = Spill::new(MEMORY_LIMIT);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = entry.read(&mut buf).map_err(|e| stream_error(e, file))?;
        if n == 0 {
            break;
        }
        spill.write(&buf[..n]).map_err(|e| {
            Error::io("cannot buffer a member in an encrypted temp file", e)
                .with_hint("make room in the temp directory (TMPDIR)")
        })?;
    }
    spill.finish().map_err(|e| Error::io("cannot buffer a member", e))
}

/// Checks every line of `SHA256SUMS` against the members, and that
/// every member is listed; returns the number of lines checked.
fn check_sums(text: &[u8], members: &[Member], file: &Path) -> Result<usize> {
    let text = String::from_utf8_lossy(text);
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = line.split_at_checked(64).and_then(|(hash, rest)| {
            let name = rest.strip_prefix("  ").or_else(|| rest.strip_prefix(" *"))?;
            hash.bytes().all(|b| b.is_ascii_hexdigit()).then(|| {
                (
                    hash.to_ascii_lowercase(),
                    name.trim_start_matches("./").to_string(),
                )
            })
        });
        let Some((hash, name)) = parsed else {
            return Err(damaged(
                format!("SHA256SUMS line {} is not `<sha256>  <file>`", i + 1),
                file,
            ));
        };
        if name == SUMS {
            // `sha256sum * > SHA256SUMS` run twice lists the file itself.
            continue;
        }
        listed.insert(name, hash);
    }
    for (name, hash) in &listed {
        match members.iter().find(|m| &m.name == name) {
            None => problems.push(format!(
                "{name}: listed in SHA256SUMS but missing from the backup"
            )),
            Some(m) if hex::encode(m.body.sha256) != *hash => {
                problems.push(format!("{name}: checksum mismatch"))
            }
            Some(_) => {}
        }
    }
    for m in members {
        if !listed.contains_key(&m.name) {
            problems.push(format!("{}: not listed in SHA256SUMS", m.name));
        }
    }
    if listed.is_empty() {
        problems.push("SHA256SUMS lists no file".to_string());
    }
    if !problems.is_empty() {
        return Err(damaged(
            format!("the backup failed its SHA256SUMS check: {}", problems.join("; ")),
            file,
        ));
    }
    Ok(listed.len())
}
