//! The baselines of `bench/mongo.sh`: the bare loops coffer's MongoDB dump
//! and restore are measured against, with the same driver and batch size.
//!
//! ```text
//! bare_loops read URI DB [--batch N] [--out DIR]
//!     every collection of DB, one after the other, through a raw `find`
//!     cursor (`RawDocumentBuf`, hint {$natural: 1}); with --out each one's
//!     documents are written to DIR/<collection>.bson (for `insert`)
//! bare_loops insert URI DB DIR [--batch N] [--in-flight N]
//!     each DIR/<collection>.bson into DB.<collection>, read in batches of
//!     N documents (at most 8 MiB) and sent as unordered `insert_many`,
//!     one batch at a time unless --in-flight says otherwise
//! ```
//!
//! Prints documents, bytes, seconds and documents per second on stdout.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use mongodb::bson::{RawDocumentBuf, doc};
use mongodb::options::Hint;
use mongodb::{Client, Collection};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn usage() -> ! {
    eprintln!(
        "usage: bare_loops read URI DB [--batch N] [--out DIR]\n       \
         bare_loops insert URI DB DIR [--batch N] [--in-flight N]"
    );
    std::process::exit(2)
}

/// The value of a flag.
fn value(it: &mut impl Iterator<Item = String>) -> String {
    match it.next() {
        Some(v) => v,
        None => usage(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let (mut batch, mut in_flight, mut out) = (1000u32, 1usize, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--batch" => batch = value(&mut it).parse()?,
            "--in-flight" => in_flight = value(&mut it).parse()?,
            "--out" => out = Some(PathBuf::from(value(&mut it))),
            _ => pos.push(a),
        }
    }
    let started = Instant::now();
    let (docs, bytes) = match pos.first().map(String::as_str) {
        Some("read") if pos.len() == 3 => read(&pos[1], &pos[2], batch, out).await?,
        Some("insert") if pos.len() == 4 => {
            insert(
                &pos[1],
                &pos[2],
                PathBuf::from(&pos[3]),
                batch as usize,
                in_flight.max(1),
            )
            .await?
        }
        _ => usage(),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} documents, {:.1} MiB, {secs:.2} s, {:.0} docs/s",
        docs,
        bytes as f64 / 1048576.0,
        docs as f64 / secs
    );
    Ok(())
}

async fn collections(client: &Client, db: &str) -> Res<Vec<String>> {
    let mut names = client.database(db).list_collection_names().await?;
    names.retain(|n| !n.starts_with("system."));
    names.sort();
    Ok(names)
}

async fn read(uri: &str, db: &str, batch: u32, out: Option<PathBuf>) -> Res<(u64, u64)> {
    let client = Client::with_uri_str(uri).await?;
    let (mut docs, mut bytes) = (0u64, 0u64);
    for name in collections(&client, db).await? {
        let coll: Collection<RawDocumentBuf> = client.database(db).collection(&name);
        let mut file = match &out {
            Some(dir) => Some(BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(dir.join(format!("{name}.bson")))?,
            )),
            None => None,
        };
        let mut cursor = coll
            .find(doc! {})
            .batch_size(batch)
            .hint(Hint::Keys(doc! { "$natural": 1 }))
            .await?;
        while cursor.advance().await? {
            let raw = cursor.current().as_bytes();
            docs += 1;
            bytes += raw.len() as u64;
            if let Some(f) = &mut file {
                f.write_all(raw)?;
            }
        }
        if let Some(mut f) = file {
            f.flush()?;
        }
    }
    Ok((docs, bytes))
}

async fn insert(uri: &str, db: &str, dir: PathBuf, batch: usize, in_flight: usize) -> Res<(u64, u64)> {
    let client = Client::with_uri_str(uri).await?;
    let (mut docs, mut bytes) = (0u64, 0u64);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "bson"));
    files.sort();
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let coll: Collection<RawDocumentBuf> = client.database(db).collection(&name);
        coll.drop().await?;
        let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
        let mut pending = VecDeque::new();
        let mut current: Vec<RawDocumentBuf> = Vec::with_capacity(batch);
        let mut current_bytes = 0usize;
        loop {
            let mut len = [0u8; 4];
            let more = match reader.read_exact(&mut len) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
                Err(e) => return Err(e.into()),
            };
            if more {
                let n = i32::from_le_bytes(len) as usize;
                let mut buf = vec![0u8; n];
                buf[..4].copy_from_slice(&len);
                reader.read_exact(&mut buf[4..])?;
                current_bytes += n;
                bytes += n as u64;
                current.push(RawDocumentBuf::from_bytes(buf)?);
            }
            if current.len() >= batch || current_bytes >= 8 << 20 || (!more && !current.is_empty()) {
                if pending.len() >= in_flight {
                    let task: tokio::task::JoinHandle<mongodb::error::Result<u64>> =
                        pending.pop_front().unwrap();
                    docs += task.await??;
                }
                let full = std::mem::replace(&mut current, Vec::with_capacity(batch));
                current_bytes = 0;
                let c = coll.clone();
                pending.push_back(tokio::spawn(async move {
                    let n = full.len() as u64;
                    c.insert_many(full).ordered(false).await.map(|_| n)
                }));
            }
            if !more {
                break;
            }
        }
        for task in pending {
            docs += task.await??;
        }
    }
    Ok((docs, bytes))
}
