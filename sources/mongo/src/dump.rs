//! [`MongodumpSource`]: reads an existing mongodump output — a dump
//! directory (plain or `--gzip`) or an `--archive` file (plain or gzipped,
//! detected by content) — and emits the same entries as the live `mongo`
//! source (`<db>/<coll>.bson` + `<coll>.metadata.json`), so a restore
//! works identically.
//!
//! The archive format (mongo-tools `common/archive`): the magic number
//! `0x8199e26d` (little-endian), a prelude block (a header document, one
//! document per collection with its metadata, a terminator `0xffffffff`),
//! then blocks of a namespace header, the namespace's documents and a
//! terminator; namespaces may be interleaved. Each namespace ends with an
//! EOF header carrying the CRC-64 (ECMA-182 polynomial, reflected, as Go's
//! `hash/crc64` computes it) of all its document bytes. Every CRC is
//! checked, every namespace must reach its EOF, every header key must be
//! known, and no document may exceed 16 MiB.
//!
//! Blocking: the dump is read on a blocking thread; each collection's
//! bytes go through a [`Spill`] (memory up to 8 MiB, beyond that an
//! encrypted temp file), so memory stays bounded.
//!
//! `system.*` collections (server internals such as `admin.system.version`)
//! and a `--oplog` dump's `oplog.bson` are left out and listed in the
//! report, as the live source leaves them out.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coffer_core::{
    Area, CaptureContext, Entry, EntryBody, EntrySender, Error, ErrorKind, RestoreOptions, Restorer, Result,
    Source, SourceInfo, SourceReport, config_error, toml,
};
use flate2::read::MultiGzDecoder;
use mongodb::bson::{Bson, Document, RawBsonRef, RawDocument};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::DUMP_KIND;
use crate::metadata::{self, CollectionType};
use coffer_core::spill::Spill;

/// The archive's magic number.
const MAGIC: u32 = 0x8199_e26d;
/// The block terminator.
const TERMINATOR: i32 = -1;
/// Largest BSON document mongodump writes (and a server accepts).
const MAX_BSON: usize = 16 * 1024 * 1024;
/// Bytes of one collection kept in memory before spilling.
const MEMORY_LIMIT: usize = 8 << 20;
/// Namespaces of an archive buffered in memory at once (mongodump
/// interleaves `--numParallelCollections`, 4 by default); any more open
/// at the same time spill from their first byte, so memory stays bounded.
const IN_MEMORY_OPEN: usize = 4;
/// Namespaces of an archive open at once at most (each holds a temp file).
const MAX_OPEN: usize = 256;
/// Largest metadata file read.
const MAX_METADATA: u64 = 16 << 20;

/// Keys of the archive header document.
const HEADER_KEYS: [&str; 4] = [
    "concurrent_collections",
    "version",
    "server_version",
    "tool_version",
];
/// Keys of a collection-metadata document of the prelude.
const METADATA_KEYS: [&str; 5] = ["db", "collection", "metadata", "size", "type"];
/// Keys of a namespace header.
const NAMESPACE_KEYS: [&str; 4] = ["db", "collection", "EOF", "CRC"];

/// An existing mongodump directory or archive, repacked as a `mongo`
/// source's entries.
pub struct MongodumpSource {
    name: String,
    path: PathBuf,
    /// An archive stream given in memory (or an encrypted spill) instead
    /// of a path; taken by the first capture.
    reader: Option<Arc<StreamSlot>>,
}

/// An archive stream, until a capture takes it.
type StreamSlot = Mutex<Option<Box<dyn Read + Send>>>;

impl fmt::Debug for MongodumpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongodumpSource")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("from_reader", &self.reader.is_some())
            .finish()
    }
}

/// `[source.NAME] kind = "mongodump"`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct DumpConfig {
    /// The dump directory or archive file (relative to the config file).
    path: PathBuf,
}

impl MongodumpSource {
    /// A source from its `[source.NAME]` table: `path`, relative to the
    /// config file's directory `base_dir`.
    pub(crate) fn from_table(name: &str, table: toml::Table, base_dir: &Path) -> Result<Self> {
        let config: DumpConfig = coffer_core::parse_table(
            table,
            "`mongodump` source",
            "a `mongodump` source takes `path` (a dump directory or --archive file)",
        )?;
        Ok(MongodumpSource::new(name, base_dir.join(config.path)))
    }

    /// The name of a one-off `mongodump:PATH` source: the file or
    /// directory name up to its first dot.
    pub(crate) fn spec_name(spec: &str) -> String {
        let stem = Path::new(spec)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem
            .split('.')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(DUMP_KIND);
        crate::source::clean_name(stem)
    }

    /// A source from the origin a bundle recorded (its path, which a
    /// restore does not read).
    pub(crate) fn from_origin(name: &str, origin: &Value) -> Self {
        let path = origin.get("path").and_then(Value::as_str).unwrap_or_default();
        MongodumpSource::new(name, path)
    }

    /// A source reading the dump directory or archive file at `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        MongodumpSource {
            name: name.into(),
            path: path.into(),
            reader: None,
        }
    }

    /// A source reading one `--archive` stream (plain or gzipped, detected
    /// by content) from `reader` instead of a file, e.g. an archive taken
    /// out of another container without writing it to disk. `label` stands
    /// for it in descriptions, errors and the bundle's origin. The stream
    /// is read by the first capture; a second capture fails.
    pub fn from_archive_reader(
        name: impl Into<String>,
        label: impl Into<PathBuf>,
        reader: Box<dyn Read + Send>,
    ) -> Self {
        MongodumpSource {
            name: name.into(),
            path: label.into(),
            reader: Some(Arc::new(Mutex::new(Some(reader)))),
        }
    }

    /// The archive stream of a reader-backed source, once.
    fn take_reader(&self) -> Result<Option<Box<dyn Read + Send>>> {
        let Some(slot) = &self.reader else {
            return Ok(None);
        };
        let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        match taken {
            Some(r) => Ok(Some(r)),
            None => Err(Error::new(
                ErrorKind::Unexpected,
                format!("the archive stream {} was already read", self.path.display()),
            )),
        }
    }
}

/// What was read, for the report.
#[derive(Default)]
struct Summary {
    format: String,
    server_version: Option<String>,
    tool_version: Option<String>,
    collections: Vec<Value>,
    views: u64,
    documents: u64,
    bytes: u64,
    skipped: Vec<String>,
}

#[async_trait]
impl Source for MongodumpSource {
    fn info(&self) -> SourceInfo {
        SourceInfo::new(
            DUMP_KIND,
            self.name.clone(),
            format!("mongodump {}", self.path.display()),
            json!({ "path": self.path.to_string_lossy() }),
        )
    }

    async fn check(&self) -> Result<()> {
        if let Some(slot) = &self.reader {
            if slot.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("the archive stream {} was already read", self.path.display()),
                ));
            }
            return Ok(());
        }
        let meta = std::fs::metadata(&self.path).map_err(|e| {
            Error::io(format!("cannot read the dump {}", self.path.display()), e)
                .with_hint("give a mongodump output directory or a mongodump --archive file")
        })?;
        if meta.is_file() {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || {
                let mut r = open_archive(&path)?;
                read_magic(&mut r, &path)
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))??;
        }
        Ok(())
    }

    async fn capture(&self, ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        let path = self.path.clone();
        // The size a plain dump directory will read, for the progress
        // display (gzipped or archive dumps: not known up front).
        if let Some(bytes) = plain_directory_size(&path) {
            ctx.report_size(bytes);
        }
        let handle = Handle::current();
        let mtime = jiff::Timestamp::now().as_second();
        let stream = self.take_reader()?;
        let summary = tokio::task::spawn_blocking(move || -> Result<Summary> {
            let mut emit = |path: String, body: Body| -> Result<()> {
                let entry = Entry {
                    area: Area::Mongo,
                    path,
                    mode: 0o644,
                    mtime,
                    owner: None,
                    stat: None,
                    body: EntryBody::File {
                        size: body.size,
                        reader: body.reader,
                    },
                };
                handle.block_on(out.send(entry))
            };
            if let Some(stream) = stream {
                let mut summary = Summary::default();
                let (r, gzip) = maybe_gzip(stream, &path)?;
                read_archive_stream(r, gzip, &path, &mut emit, &mut summary)?;
                return Ok(summary);
            }
            let meta = std::fs::metadata(&path).map_err(|e| {
                Error::io(format!("cannot read the dump {}", path.display()), e)
                    .with_hint("give a mongodump output directory or a mongodump --archive file")
            })?;
            let mut summary = Summary::default();
            if meta.is_dir() {
                read_directory(&path, &mut emit, &mut summary)?;
            } else {
                read_archive(&path, &mut emit, &mut summary)?;
            }
            Ok(summary)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("dump reader failed: {e}")))??;
        Ok(report(summary))
    }

    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        let Some(uri) = opts.text(crate::URI_OPTION) else {
            return Err(
                config_error("a `mongodump` source does not know which server to restore into")
                    .with_hint("pass --mongo-uri mongodb://host:27017/ (or set COFFER_MONGO_URI)"),
            );
        };
        let uri = crate::config::UriSource::Literal(uri.to_owned()).resolve()?;
        let client = crate::source::connect(&uri, Duration::from_secs(5)).await?;
        let drop = opts.flag("drop");
        let rules = crate::ns::NsRules::from_params(opts.own())?;
        let restorer = crate::restore::MongoRestorer::new(client, uri, drop, rules, opts).await?;
        Ok(Box::new(restorer))
    }
}

/// An entry body with its size.
struct Body {
    size: u64,
    reader: Box<dyn Read + Send>,
}

impl Body {
    fn bytes(data: Vec<u8>) -> Body {
        Body {
            size: data.len() as u64,
            reader: Box::new(Cursor::new(data)),
        }
    }
}

type Emit<'a> = dyn FnMut(String, Body) -> Result<()> + 'a;

fn damaged(what: impl Into<String>, path: &Path) -> Error {
    Error::new(ErrorKind::Integrity, what.into())
        .with_context("dump", path.display().to_string())
        .with_hint("the dump is damaged or not mongodump output; take a new dump or use another copy")
}

/// Refuses a database name MongoDB would not accept (and that could not be
/// one folder of the bundle): empty, over 64 bytes, or holding any of
/// `/\. "$` or NUL. `""` is allowed for the oplog of a `--oplog` archive.
fn check_db_name(db: &str, coll: &str, path: &Path) -> Result<()> {
    if db.is_empty() && coll == "oplog" {
        return Ok(());
    }
    if db.is_empty() || db.len() > 64 || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        return Err(damaged(format!("`{db}` is not a valid database name"), path));
    }
    Ok(())
}

fn read_error(e: io::Error, path: &Path) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        damaged("the dump ends in the middle of a document (truncated)", path)
    } else if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::InvalidData {
        damaged(format!("cannot decompress the dump: {e}"), path)
    } else {
        Error::io(format!("cannot read {}", path.display()), e)
    }
}

/// Opens a file, decompressing it when it starts with the gzip magic.
fn open_maybe_gzip(path: &Path) -> Result<(Box<dyn Read + Send>, bool)> {
    let file = File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    maybe_gzip(Box::new(file), path)
}

/// Decompresses `input` when it starts with the gzip magic (archives:
/// their own magic can never look like it).
fn maybe_gzip(mut input: Box<dyn Read + Send>, path: &Path) -> Result<(Box<dyn Read + Send>, bool)> {
    // Two bytes for sure: a stream may hand out fewer at a time.
    let mut head = [0u8; 2];
    let got = coffer_core::fsutil::read_up_to(&mut input, &mut head).map_err(|e| read_error(e, path))?;
    let r = BufReader::with_capacity(256 * 1024, Cursor::new(head[..got].to_vec()).chain(input));
    if head[..got] == [0x1f, 0x8b] {
        Ok((
            Box::new(BufReader::with_capacity(256 * 1024, MultiGzDecoder::new(r))),
            true,
        ))
    } else {
        Ok((Box::new(r), false))
    }
}

/// Opens a file of a dump directory, decompressing it when its name ends
/// in `.gz`, as mongorestore decides (a plain `.bson` may well start with
/// the gzip magic: a first document of 35,615 bytes does).
fn open_dir_file(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let r = BufReader::with_capacity(256 * 1024, file);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::with_capacity(
            256 * 1024,
            MultiGzDecoder::new(r),
        )))
    } else {
        Ok(Box::new(r))
    }
}

fn open_archive(path: &Path) -> Result<Box<dyn Read + Send>> {
    Ok(open_maybe_gzip(path)?.0)
}

fn read_magic(r: &mut dyn Read, path: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            damaged("not a mongodump archive: shorter than its magic number", path)
        } else {
            read_error(e, path)
        }
    })?;
    let got = u32::from_le_bytes(magic);
    if got != MAGIC {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!("not a mongodump archive: bad magic number {got:#010x} (expected {MAGIC:#010x})"),
        )
        .with_context("dump", path.display().to_string())
        .with_hint("give a file written by `mongodump --archive` (optionally --gzip) or a dump directory"));
    }
    Ok(())
}

/// CRC-64 as Go's `crc64.New(crc64.MakeTable(crc64.ECMA))`: the ECMA-182
/// polynomial, reflected, initial and final value all ones (CRC-64/XZ).
struct Crc64(u64);

const CRC_TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xC96C_5795_D787_0F42
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

impl Crc64 {
    fn new() -> Crc64 {
        Crc64(!0)
    }

    fn update(&mut self, data: &[u8]) {
        let mut crc = self.0;
        for &b in data {
            crc = CRC_TABLE[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
        }
        self.0 = crc;
    }

    fn sum(&self) -> u64 {
        !self.0
    }
}

/// What the next four bytes of an archive are.
enum Next {
    /// A BSON document (its bytes).
    Doc(Vec<u8>),
    /// The terminator `0xffffffff`.
    Terminator,
    /// The clean end of the input.
    End,
}

/// Reads a document, a terminator or the end; `ns` names the namespace for
/// errors.
fn next(r: &mut dyn Read, path: &Path, ns: &str) -> Result<Next> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(Next::End),
            Ok(0) => return Err(damaged("the archive is truncated", path)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e, path)),
        }
    }
    let len = i32::from_le_bytes(len);
    if len == TERMINATOR {
        return Ok(Next::Terminator);
    }
    if len < 5 {
        return Err(damaged(format!("bad BSON document length {len}{ns}"), path));
    }
    if len as usize > MAX_BSON {
        return Err(damaged(
            format!("a document of {len} bytes is over the 16 MiB BSON limit{ns}"),
            path,
        ));
    }
    let mut buf = vec![0u8; len as usize];
    buf[..4].copy_from_slice(&len.to_le_bytes());
    r.read_exact(&mut buf[4..]).map_err(|e| read_error(e, path))?;
    if buf[len as usize - 1] != 0 {
        return Err(damaged(
            format!("a BSON document does not end with a zero byte{ns}"),
            path,
        ));
    }
    Ok(Next::Doc(buf))
}

/// Decodes a header document, refusing keys outside `known`.
fn header(buf: &[u8], known: &[&str], what: &str, path: &Path) -> Result<Document> {
    // Every field of these headers is a plain value: nothing nested is
    // decoded (a document nested thousands deep would overflow the stack).
    let raw = RawDocument::from_bytes(buf).map_err(|e| damaged(format!("malformed {what}: {e}"), path))?;
    for field in raw.iter() {
        let (k, v) = field.map_err(|e| damaged(format!("malformed {what}: {e}"), path))?;
        if matches!(
            v,
            RawBsonRef::Document(_) | RawBsonRef::Array(_) | RawBsonRef::JavaScriptCodeWithScope(_)
        ) {
            return Err(damaged(format!("`{k}` of the {what} is not a plain value"), path));
        }
    }
    let doc = Document::from_reader(Cursor::new(buf))
        .map_err(|e| damaged(format!("malformed {what}: {e}"), path))?;
    if let Some(k) = doc.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(damaged(
            format!("unknown key `{k}` in the {what} (known: {})", known.join(", ")),
            path,
        )
        .with_hint("this archive is damaged or of a newer format than coffer reads"));
    }
    Ok(doc)
}

fn text(doc: &Document, key: &str, what: &str, path: &Path) -> Result<String> {
    match doc.get(key) {
        Some(Bson::String(s)) => Ok(s.clone()),
        None => Err(damaged(format!("the {what} has no `{key}`"), path)),
        Some(_) => Err(damaged(format!("`{key}` of the {what} is not a string"), path)),
    }
}

/// Why a namespace is not restored, if it is left out.
fn left_out(db: &str, coll: &str) -> Option<&'static str> {
    if db.is_empty() && coll == "oplog" {
        Some("the oplog of a --oplog dump (point-in-time replay of mongodump dumps is not supported)")
    } else if coll.starts_with("system.") {
        Some("a server-internal system collection")
    } else {
        None
    }
}

/// One namespace of an archive.
struct Namespace {
    db: String,
    coll: String,
    /// Its metadata JSON from the prelude (empty: none).
    metadata: String,
    kind: CollectionType,
    state: State,
    spill: Option<Spill>,
    crc: Crc64,
    documents: u64,
    bytes: u64,
}

impl Namespace {
    /// A namespace no block has opened yet.
    fn new(db: String, coll: String, metadata: String, kind: CollectionType) -> Namespace {
        Namespace {
            db,
            coll,
            metadata,
            kind,
            state: State::Unopened,
            spill: None,
            crc: Crc64::new(),
            documents: 0,
            bytes: 0,
        }
    }
}

#[derive(PartialEq, Eq)]
enum State {
    Unopened,
    Open,
    Closed,
}

fn read_archive(path: &Path, emit: &mut Emit<'_>, summary: &mut Summary) -> Result<()> {
    let (r, gzip) = open_maybe_gzip(path)?;
    read_archive_stream(r, gzip, path, emit, summary)
}

fn read_archive_stream(
    mut r: Box<dyn Read + Send>,
    gzip: bool,
    path: &Path,
    emit: &mut Emit<'_>,
    summary: &mut Summary,
) -> Result<()> {
    summary.format = if gzip { "archive (gzip)" } else { "archive" }.to_string();
    read_magic(&mut r, path)?;
    // The prelude: a header, then one metadata document per collection.
    let mut spaces = read_archive_prelude(&mut r, path, summary)?;
    // The blocks: namespace header, documents, terminator.
    let mut open = 0usize;
    loop {
        let buf = match next(&mut r, path, "")? {
            Next::End => break,
            Next::Terminator => {
                return Err(damaged(
                    "two terminators in a row (a block without a namespace header)",
                    path,
                ));
            }
            Next::Doc(buf) => buf,
        };
        let h = namespace_header(&buf, path)?;
        let ns = format!("{}.{}", h.db, h.coll);
        let space = open_namespace(&mut spaces, &mut open, &h, &ns, path)?;
        let in_ns = format!(" in namespace `{ns}`");
        if h.eof {
            check_eof(&mut r, space, h.crc, &in_ns, path)?;
            space.state = State::Closed;
            open -= 1;
            finish_namespace(space, emit, summary)?;
            continue;
        }
        read_block_documents(&mut r, space, &in_ns, path)?;
    }
    finish_archive(&mut spaces, path, emit, summary)
}

/// Reads an archive's prelude (header, collection metadata); returns its namespaces by `db.collection`.
fn read_archive_prelude(
    r: &mut dyn Read,
    path: &Path,
    summary: &mut Summary,
) -> Result<BTreeMap<String, Namespace>> {
    let Next::Doc(buf) = next(r, path, "")? else {
        return Err(damaged("the archive has no header document", path));
    };
    let head = header(&buf, &HEADER_KEYS, "archive header", path)?;
    summary.server_version = head.get_str("server_version").ok().map(str::to_string);
    summary.tool_version = head.get_str("tool_version").ok().map(str::to_string);
    let mut spaces: BTreeMap<String, Namespace> = BTreeMap::new();
    loop {
        match next(r, path, " in the prelude")? {
            Next::Terminator => break,
            Next::End => return Err(damaged("the archive ends inside its prelude", path)),
            Next::Doc(buf) => {
                let (ns, space) = prelude_namespace(&buf, path)?;
                if spaces.contains_key(&ns) {
                    return Err(damaged(format!("the prelude lists `{ns}` twice"), path));
                }
                spaces.insert(ns, space);
            }
        }
    }
    Ok(spaces)
}

/// Decodes a collection-metadata document of the prelude into its `db.collection` and namespace.
fn prelude_namespace(buf: &[u8], path: &Path) -> Result<(String, Namespace)> {
    let m = header(buf, &METADATA_KEYS, "collection metadata of the prelude", path)?;
    let what = "collection metadata of the prelude";
    let db = text(&m, "db", what, path)?;
    let coll = text(&m, "collection", what, path)?;
    check_db_name(&db, &coll, path)?;
    let json = match m.get("metadata") {
        None => String::new(),
        Some(Bson::String(s)) => s.clone(),
        Some(_) => return Err(damaged("`metadata` of the prelude is not a string", path)),
    };
    let ns = format!("{db}.{coll}");
    let kind = match m.get_str("type").unwrap_or("collection") {
        "" | "collection" => CollectionType::Collection,
        "view" => CollectionType::View,
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("`{ns}` is a collection of type `{other}`, which coffer cannot restore yet"),
            )
            .with_context("dump", path.display().to_string())
            .with_hint("restore this archive with mongorestore instead"));
        }
    };
    let kind = if json.is_empty() {
        kind
    } else {
        metadata::parse(json.as_bytes(), &ns)?.kind
    };
    Ok((ns, Namespace::new(db, coll, json, kind)))
}

/// The fields of a namespace header of an archive block.
struct BlockHeader {
    db: String,
    coll: String,
    /// The namespace's last block (no documents, its CRC).
    eof: bool,
    crc: i64,
}

/// Decodes the namespace header that starts a block.
fn namespace_header(buf: &[u8], path: &Path) -> Result<BlockHeader> {
    let h = header(buf, &NAMESPACE_KEYS, "namespace header", path)?;
    let what = "namespace header";
    let db = text(&h, "db", what, path)?;
    let coll = text(&h, "collection", what, path)?;
    check_db_name(&db, &coll, path)?;
    let eof = match h.get("EOF") {
        None => false,
        Some(Bson::Boolean(b)) => *b,
        Some(_) => return Err(damaged("`EOF` of a namespace header is not a boolean", path)),
    };
    let crc = match h.get("CRC") {
        None => 0,
        Some(Bson::Int64(c)) => *c,
        Some(Bson::Int32(c)) => i64::from(*c),
        Some(_) => return Err(damaged("`CRC` of a namespace header is not an integer", path)),
    };
    Ok(BlockHeader { db, coll, eof, crc })
}

/// The namespace `ns` of a block, opened (counted in `open`, its spill made) on its first block.
fn open_namespace<'a>(
    spaces: &'a mut BTreeMap<String, Namespace>,
    open: &mut usize,
    h: &BlockHeader,
    ns: &str,
    path: &Path,
) -> Result<&'a mut Namespace> {
    let space = spaces.entry(ns.to_string()).or_insert_with(|| {
        Namespace::new(
            h.db.clone(),
            h.coll.clone(),
            String::new(),
            CollectionType::Collection,
        )
    });
    if space.state == State::Closed {
        return Err(damaged(format!("`{ns}` has data after its EOF block"), path));
    }
    if space.state == State::Unopened {
        if *open >= MAX_OPEN {
            return Err(damaged(
                format!("more than {MAX_OPEN} namespaces are open at once (mongodump interleaves a few)"),
                path,
            ));
        }
        space.state = State::Open;
        *open += 1;
        if left_out(&h.db, &h.coll).is_none() {
            // Memory for the first few open at once, the rest on disk
            // (encrypted) from their first byte.
            let limit = if *open <= IN_MEMORY_OPEN { MEMORY_LIMIT } else { 0 };
            space.spill = Some(Spill::new(limit));
        }
    }
    Ok(space)
}

/// Checks that an EOF block ends at once and that the namespace's documents give its `crc`.
fn check_eof(r: &mut dyn Read, space: &Namespace, crc: i64, in_ns: &str, path: &Path) -> Result<()> {
    match next(r, path, in_ns)? {
        Next::Terminator => {}
        Next::Doc(_) => return Err(damaged(format!("documents after the EOF header{in_ns}"), path)),
        Next::End => return Err(damaged(format!("the archive is truncated{in_ns}"), path)),
    }
    let sum = space.crc.sum() as i64;
    if sum != crc {
        return Err(damaged(
            format!("CRC mismatch{in_ns}: the archive says {crc}, its documents give {sum}"),
            path,
        ));
    }
    Ok(())
}

/// Reads a block's documents up to its terminator into its namespace (CRC, counts, spill).
fn read_block_documents(r: &mut dyn Read, space: &mut Namespace, in_ns: &str, path: &Path) -> Result<()> {
    loop {
        match next(r, path, in_ns)? {
            Next::Terminator => break,
            Next::End => {
                return Err(damaged(
                    format!("the archive ends inside a block{in_ns} (truncated)"),
                    path,
                ));
            }
            Next::Doc(doc) => {
                space.crc.update(&doc);
                space.documents += 1;
                space.bytes += doc.len() as u64;
                if let Some(spill) = &mut space.spill {
                    spill
                        .write(&doc)
                        .map_err(|e| Error::io("cannot buffer a collection in an encrypted temp file", e))?;
                }
            }
        }
    }
    Ok(())
}

/// Emits the views no block opened, and fails when a namespace did not reach its EOF block.
fn finish_archive(
    spaces: &mut BTreeMap<String, Namespace>,
    path: &Path,
    emit: &mut Emit<'_>,
    summary: &mut Summary,
) -> Result<()> {
    let mut missing = Vec::new();
    for (ns, space) in spaces.iter_mut() {
        match space.state {
            State::Closed => {}
            State::Open => missing.push(ns.clone()),
            State::Unopened if space.kind == CollectionType::View => {
                finish_namespace(space, emit, summary)?;
            }
            State::Unopened => missing.push(ns.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(damaged(
            format!(
                "the archive ends before these namespaces reached their EOF block: {}",
                missing.join(", ")
            ),
            path,
        )
        .with_hint("the archive is truncated (an interrupted mongodump or copy); use a complete one"));
    }
    Ok(())
}

/// Emits a finished archive namespace (or records why it is left out).
fn finish_namespace(space: &mut Namespace, emit: &mut Emit<'_>, summary: &mut Summary) -> Result<()> {
    let ns = format!("{}.{}", space.db, space.coll);
    if let Some(why) = left_out(&space.db, &space.coll) {
        summary.skipped.push(format!("{ns}: {why}"));
        return Ok(());
    }
    let base = format!("{}/{}", space.db, metadata::escape_name(&space.coll));
    let metadata = std::mem::take(&mut space.metadata);
    let spill = space.spill.take();
    let indexes = if metadata.is_empty() {
        0
    } else {
        metadata::parse(metadata.as_bytes(), &ns)?.indexes.len()
    };
    if !metadata.is_empty() {
        emit(
            format!("{base}.metadata.json"),
            Body::bytes(metadata.into_bytes()),
        )?;
    }
    if space.kind == CollectionType::View {
        summary.views += 1;
        summary
            .collections
            .push(json!({ "db": space.db, "collection": space.coll, "type": "view" }));
        return Ok(());
    }
    let spill = spill.unwrap_or_else(|| Spill::new(MEMORY_LIMIT));
    emit_collection(
        &space.db,
        &space.coll,
        &base,
        spill,
        space.documents,
        indexes,
        emit,
        summary,
    )
}

#[allow(clippy::too_many_arguments)]
fn emit_collection(
    db: &str,
    coll: &str,
    base: &str,
    spill: Spill,
    documents: u64,
    indexes: usize,
    emit: &mut Emit<'_>,
    summary: &mut Summary,
) -> Result<()> {
    let body = spill
        .finish()
        .map_err(|e| Error::io("cannot buffer a collection", e))?;
    summary.documents += documents;
    summary.bytes += body.size;
    summary.collections.push(json!({
        "db": db,
        "collection": coll,
        "type": "collection",
        "documents": documents,
        "bytes": body.size,
        "indexes": indexes,
        "sha256": hex::encode(body.sha256),
        "spilled": body.spilled,
    }));
    emit(
        format!("{base}.bson"),
        Body {
            size: body.size,
            reader: body.reader,
        },
    )
}

/// The total size of the files of a dump directory without gzipped ones;
/// `None` for an archive, a gzipped dump, or what cannot be listed.
fn plain_directory_size(dir: &Path) -> Option<u64> {
    let mut total = 0;
    for db in std::fs::read_dir(dir).ok()?.flatten() {
        let meta = std::fs::metadata(db.path()).ok()?;
        if !meta.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(db.path()).ok()?.flatten() {
            let name = f.file_name();
            if name.to_string_lossy().ends_with(".gz") {
                return None;
            }
            total += f.metadata().ok()?.len();
        }
    }
    Some(total)
}

/// Reads a whole (possibly gzipped) small file.
fn read_small(path: &Path) -> Result<Vec<u8>> {
    let r = open_dir_file(path)?;
    let mut out = Vec::new();
    r.take(MAX_METADATA + 1)
        .read_to_end(&mut out)
        .map_err(|e| read_error(e, path))?;
    if out.len() as u64 > MAX_METADATA {
        return Err(damaged("a metadata file over 16 MiB", path));
    }
    Ok(out)
}

/// Reads the server and tool versions of a `prelude.json` (plain or
/// gzipped), where one holds them.
fn read_prelude(path: &Path, summary: &mut Summary) -> Result<()> {
    let text = read_small(path)?;
    let v: Value =
        serde_json::from_slice(&text).map_err(|e| damaged(format!("malformed prelude.json: {e}"), path))?;
    if let Some(version) = v["ServerVersion"].as_str() {
        summary.server_version = Some(version.to_string());
    }
    if let Some(version) = v["ToolVersion"].as_str() {
        summary.tool_version = Some(version.to_string());
    }
    Ok(())
}

/// The files of one collection in a dump directory.
#[derive(Default)]
struct Files {
    metadata: Option<PathBuf>,
    bson: Option<PathBuf>,
}

fn sorted_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
        // Followed: a database folder may be a symlink.
        let meta = std::fs::metadata(e.path())
            .map_err(|err| Error::io(format!("cannot stat {}", e.path().display()), err))?;
        let name = e.file_name().to_string_lossy().into_owned();
        out.push((name, e.path(), meta.is_dir()));
    }
    out.sort();
    Ok(out)
}

fn read_directory(dir: &Path, emit: &mut Emit<'_>, summary: &mut Summary) -> Result<()> {
    let mut gzip = false;
    let top = sorted_dir(dir)?;
    read_top_files(dir, &top, summary)?;
    for (db, path, is_dir) in top {
        if !is_dir {
            continue;
        }
        gzip |= read_database(&db, &path, emit, summary)?;
    }
    summary.format = if gzip { "directory (gzip)" } else { "directory" }.to_string();
    Ok(())
}

/// Reads the files at the top of a dump directory (a prelude; others left out or refused).
fn read_top_files(dir: &Path, top: &[(String, PathBuf, bool)], summary: &mut Summary) -> Result<()> {
    for (name, path, is_dir) in top {
        if *is_dir {
            continue;
        }
        match name.as_str() {
            "prelude.json" | "prelude.json.gz" => read_prelude(path, summary)?,
            "oplog.bson" | "oplog.bson.gz" => summary
                .skipped
                .push(format!("{name}: {}", left_out("", "oplog").unwrap_or_default())),
            n if n.ends_with(".bson") || n.ends_with(".bson.gz") => {
                return Err(config_error(format!(
                    "{} holds collection files directly: it looks like one database's folder",
                    dir.display()
                ))
                .with_hint("give the dump's top directory (the one holding a folder per database)"));
            }
            _ => {
                tracing::warn!(file = %path.display(), "ignoring a file that is not part of a mongodump");
                summary
                    .skipped
                    .push(format!("{name}: not a file mongodump writes"));
            }
        }
    }
    Ok(())
}

/// Reads database `db`'s folder `path` and emits its collections; returns whether a file was gzipped.
fn read_database(db: &str, path: &Path, emit: &mut Emit<'_>, summary: &mut Summary) -> Result<bool> {
    check_db_name(db, "", path)?;
    let mut gzip = false;
    let mut files: BTreeMap<String, Files> = BTreeMap::new();
    for (name, file, is_dir) in sorted_dir(path)? {
        if is_dir {
            // mongodump writes none: most likely the dump's parent
            // directory was given, and every collection would be missed.
            return Err(config_error(format!(
                "{} holds a folder ({name}) inside a database folder: not a mongodump layout",
                path.display()
            ))
            .with_hint("give the dump's top directory (the one holding a folder per database)"));
        }
        let (plain, gz) = match name.strip_suffix(".gz") {
            Some(p) => (p, true),
            None => (name.as_str(), false),
        };
        gzip |= gz;
        // mongodump 100.x also writes one into each database folder.
        if plain == "prelude.json" {
            read_prelude(&file, summary)?;
            continue;
        }
        if !add_collection_file(&mut files, plain, &file, path)? {
            tracing::warn!(file = %file.display(), "ignoring a file that is not part of a mongodump");
            summary
                .skipped
                .push(format!("{db}/{name}: not a file mongodump writes"));
        }
    }
    for (stem, f) in files {
        read_collection(db, &stem, f, emit, summary)?;
    }
    Ok(gzip)
}

/// Records `file` (`plain` without `.gz`) as its collection's metadata or BSON file; `false`: neither.
fn add_collection_file(
    files: &mut BTreeMap<String, Files>,
    plain: &str,
    file: &Path,
    path: &Path,
) -> Result<bool> {
    let slot = match (plain.strip_suffix(".metadata.json"), plain.strip_suffix(".bson")) {
        (Some(stem), _) => Some(&mut files.entry(stem.to_string()).or_default().metadata),
        (None, Some(stem)) => Some(&mut files.entry(stem.to_string()).or_default().bson),
        (None, None) => None,
    };
    let Some(slot) = slot else {
        return Ok(false);
    };
    if let Some(first) = slot.replace(file.to_path_buf()) {
        return Err(damaged(
            format!(
                "two files for one collection: {} and {}",
                first.display(),
                file.display()
            ),
            path,
        )
        .with_hint("keep one of them (a dump is either plain or --gzip) and back up again"));
    }
    Ok(true)
}

fn read_collection(db: &str, stem: &str, f: Files, emit: &mut Emit<'_>, summary: &mut Summary) -> Result<()> {
    let meta_text = f.metadata.as_deref().map(read_small).transpose()?;
    let meta = match (&meta_text, &f.metadata) {
        (Some(text), Some(p)) => Some(metadata::parse(text, &p.display().to_string())?),
        _ => None,
    };
    let name = match meta.as_ref().and_then(|m| m.collection_name.clone()) {
        Some(n) => n,
        None => metadata::unescape_name(stem).ok_or_else(|| {
            damaged(
                format!("`{stem}` is not a valid escaped collection name"),
                f.bson
                    .as_deref()
                    .or(f.metadata.as_deref())
                    .unwrap_or(Path::new(db)),
            )
        })?,
    };
    let ns = format!("{db}.{name}");
    if let Some(why) = left_out(db, &name) {
        summary.skipped.push(format!("{ns}: {why}"));
        return Ok(());
    }
    let base = format!("{db}/{stem}");
    if let Some(text) = meta_text {
        emit(format!("{base}.metadata.json"), Body::bytes(text))?;
    }
    let kind = meta.as_ref().map_or(CollectionType::Collection, |m| m.kind);
    if kind == CollectionType::View {
        summary.views += 1;
        summary
            .collections
            .push(json!({ "db": db, "collection": name, "type": "view" }));
        return Ok(());
    }
    let Some(bson) = f.bson else {
        return Err(damaged(
            format!("`{ns}` has metadata but no .bson file"),
            f.metadata.as_deref().unwrap_or(Path::new(db)),
        ));
    };
    let mut r = open_dir_file(&bson)?;
    let mut spill = Spill::new(MEMORY_LIMIT);
    let mut documents = 0u64;
    let in_ns = format!(" in `{ns}`");
    loop {
        match next(&mut r, &bson, &in_ns)? {
            Next::End => break,
            Next::Terminator => return Err(damaged(format!("bad BSON document length -1{in_ns}"), &bson)),
            Next::Doc(doc) => {
                documents += 1;
                spill
                    .write(&doc)
                    .map_err(|e| Error::io("cannot buffer a collection in an encrypted temp file", e))?;
            }
        }
    }
    let indexes = meta.as_ref().map_or(0, |m| m.indexes.len());
    emit_collection(db, &name, &base, spill, documents, indexes, emit, summary)
}

fn report(s: Summary) -> SourceReport {
    let collections = s.collections.len() as u64 - s.views;
    let mut summary = format!(
        "mongodump {}: {collections} collection{}, {} document{}, {}",
        s.format,
        if collections == 1 { "" } else { "s" },
        s.documents,
        if s.documents == 1 { "" } else { "s" },
        coffer_core::human_size(s.bytes)
    );
    if s.views > 0 {
        summary.push_str(&format!(
            ", {} view{}",
            s.views,
            if s.views == 1 { "" } else { "s" }
        ));
    }
    if !s.skipped.is_empty() {
        summary.push_str(&format!(", {} left out", s.skipped.len()));
    }
    SourceReport {
        position: None,
        summary,
        details: json!({
            "format": s.format,
            "server_version": s.server_version,
            "tool_version": s.tool_version,
            "consistency": "as the original mongodump (read from its output)",
            "collections": s.collections,
            "left_out": s.skipped,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_is_go_ecma() {
        // CRC-64/XZ check value.
        let mut c = Crc64::new();
        c.update(b"123456789");
        assert_eq!(c.sum(), 0x995D_C9BB_DF19_39FA);
    }

    #[test]
    fn spec_names() {
        use coffer_core::SourceFactory;
        let f = crate::kinds::MongoKind::Mongodump;
        assert_eq!(f.spec_name("/backups/2024-05-01.archive.gz"), "2024-05-01");
        assert_eq!(f.spec_name("dump/"), "dump");
    }
}
