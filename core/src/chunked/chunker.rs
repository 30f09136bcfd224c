//! The keyed content-defined chunker: FastCDC v2020 (the `fastcdc`
//! crate's cut function) over a secret gear table, so cut points, and so
//! chunk sizes, reveal nothing to whoever lacks the dedup key.

use std::io::{self, Write};

use fastcdc::v2020::{MASKS, cut_gear};

use std::collections::VecDeque;

use super::{AVG_CHUNK, DOC_AVG_CHUNK, DOC_MAX_CHUNK, DOC_MIN_CHUNK, DedupKey, MAX_CHUNK, MIN_CHUNK};

/// A cut piece of the plaintext stream.
pub(crate) struct PlainChunk {
    pub(crate) data: Vec<u8>,
    /// Never deduplicated: addressed with the snapshot's own key.
    pub(crate) secret: bool,
}

/// Where the chunker's chunks go.
pub(crate) trait ChunkOut {
    fn send(&mut self, chunk: PlainChunk) -> io::Result<()>;
}

impl<F: FnMut(PlainChunk) -> io::Result<()>> ChunkOut for F {
    fn send(&mut self, chunk: PlainChunk) -> io::Result<()> {
        self(chunk)
    }
}

/// Cuts what is written through it into chunks handed to `send`.
pub(crate) struct Chunker<F: ChunkOut> {
    /// The data not cut yet is `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    secret: bool,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
    /// Masks for the small chunks of a document sequence.
    doc_mask_s: u64,
    doc_mask_l: u64,
    /// Set by [`Chunker::documents`] until the next cut.
    docs: Option<Documents>,
    /// Stream offset of `buf[0]`.
    base: u64,
    send: F,
}

/// Where the documents of a BSON sequence end, as stream offsets.
struct Documents {
    /// Where the next document's length prefix starts.
    next: u64,
    /// Ends of documents not cut at yet, in order.
    ends: VecDeque<u64>,
    /// Not a document sequence after all (a bad length): no more ends.
    broken: bool,
}

impl<F: ChunkOut> Chunker<F> {
    pub(crate) fn new(key: &DedupKey, send: F) -> Self {
        let (gear, gear_ls) = key.gear();
        // Normalisation level 1, as the crate's default.
        let bits = AVG_CHUNK.trailing_zeros() as usize;
        let doc_bits = DOC_AVG_CHUNK.trailing_zeros() as usize;
        Chunker {
            buf: Vec::with_capacity(MAX_CHUNK * 2),
            start: 0,
            secret: false,
            gear,
            gear_ls,
            mask_s: MASKS[bits + 1],
            mask_l: MASKS[bits - 1],
            doc_mask_s: MASKS[doc_bits + 1],
            doc_mask_l: MASKS[doc_bits - 1],
            docs: None,
            base: 0,
            send,
        }
    }

    /// Cuts what is written from here to the next [`Chunker::cut`] as a
    /// sequence of BSON documents (a collection's `.bson`): small chunks
    /// ending where a document ends (see [`DOC_AVG_CHUNK`]). Call it right
    /// after a cut.
    pub(crate) fn documents(&mut self) {
        if self.secret {
            return;
        }
        self.docs = Some(Documents {
            next: self.base + self.buf.len() as u64,
            ends: VecDeque::new(),
            broken: false,
        });
    }

    /// Records the ends of the documents whose length prefix is in hand.
    fn scan_documents(&mut self) {
        let Some(d) = &mut self.docs else { return };
        let end = self.base + self.buf.len() as u64;
        while !d.broken && d.next + 4 <= end {
            let at = (d.next - self.base) as usize;
            let len = u32::from_le_bytes(self.buf[at..at + 4].try_into().expect("4 bytes"));
            // 5 bytes is the empty document; 16 MiB is MongoDB's limit
            // (with room for the dump's slack).
            if !(5..=(17 << 20)).contains(&len) {
                d.broken = true;
                break;
            }
            d.next += u64::from(len);
            d.ends.push_back(d.next);
        }
    }

    /// In a document sequence: the cut after `buf[start..]`'s next chunk,
    /// relative to `start`, when it can be decided from what is in hand
    /// (`last`: nothing more comes before the next cut).
    fn document_cut(&mut self, last: bool) -> Option<usize> {
        let have = self.buf.len() - self.start;
        if !last && have < 2 * DOC_MAX_CHUNK {
            return None;
        }
        let (_, c) = cut_gear(
            &self.buf[self.start..self.start + have.min(DOC_MAX_CHUNK)],
            DOC_MIN_CHUNK,
            DOC_AVG_CHUNK,
            DOC_MAX_CHUNK,
            self.doc_mask_s,
            self.doc_mask_l,
            self.doc_mask_s << 1,
            self.doc_mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        let from = self.base + self.start as u64;
        let d = self.docs.as_mut().expect("in a document sequence");
        while d.ends.front().is_some_and(|&e| e <= from) {
            d.ends.pop_front();
        }
        // The first document end at or after the content-defined point,
        // if it is within twice the largest chunk (always in hand); else
        // the point itself (a document that large is cut inside).
        let at = d
            .ends
            .iter()
            .map(|&e| (e - from) as usize)
            .find(|&e| e >= c)
            .filter(|&e| e <= 2 * DOC_MAX_CHUNK)
            .unwrap_or(c);
        Some(at.min(have))
    }

    /// Ends the current chunk here, and starts secret (or shared) chunks.
    pub(crate) fn cut(&mut self, secret: bool) -> io::Result<()> {
        while self.start < self.buf.len() {
            self.emit_one(true)?;
        }
        self.base += self.buf.len() as u64;
        self.buf.clear();
        self.start = 0;
        self.secret = secret;
        self.docs = None;
        Ok(())
    }

    /// Emits the next content-defined chunk of the buffer (all of it when
    /// it is shorter than the smallest chunk). `last`: nothing more comes
    /// before the next cut.
    fn emit_one(&mut self, last: bool) -> io::Result<()> {
        // Secrets are cut at fixed sizes: their chunk lengths (public, in
        // the chunk list) then say nothing the dedup key could relate to
        // their content.
        if self.secret {
            let cut = (self.buf.len() - self.start).min(AVG_CHUNK);
            let data = self.buf[self.start..self.start + cut].to_vec();
            self.start += cut;
            return self.send.send(PlainChunk { data, secret: true });
        }
        if self.docs.is_some() {
            let cut = self.document_cut(last).expect("called with enough in hand");
            let data = self.buf[self.start..self.start + cut].to_vec();
            self.start += cut;
            return self.send.send(PlainChunk { data, secret: false });
        }
        let (_, cut) = cut_gear(
            &self.buf[self.start..],
            MIN_CHUNK,
            AVG_CHUNK,
            MAX_CHUNK,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        let data = self.buf[self.start..self.start + cut].to_vec();
        self.start += cut;
        self.send.send(PlainChunk {
            data,
            secret: self.secret,
        })
    }

    /// The sender (all data written so far is cut and sent after
    /// [`Chunker::cut`]).
    pub(crate) fn out(&mut self) -> &mut F {
        &mut self.send
    }

    /// Emits what is left and hands back the sender.
    pub(crate) fn finish(mut self) -> io::Result<F> {
        self.cut(false)?;
        Ok(self.send)
    }
}

impl<F: ChunkOut> Write for Chunker<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Move what is left to the front once a maximum chunk was cut
        // off: at most one copy of the data, amortised.
        if self.start >= MAX_CHUNK {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        self.scan_documents();
        // Only cut with a whole maximum chunk in hand: a cut found in
        // less could be a different one than in the full stream.
        let max = if self.docs.is_some() {
            2 * DOC_MAX_CHUNK
        } else {
            MAX_CHUNK
        };
        while self.buf.len() - self.start >= max {
            self.emit_one(false)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(key: &DedupKey, parts: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut c = Chunker::new(key, |p: PlainChunk| {
            out.push(p.data);
            Ok(())
        });
        for p in parts {
            // Odd write sizes: cuts must not depend on them.
            for piece in p.chunks(100_003) {
                c.write_all(piece).unwrap();
            }
            c.cut(false).unwrap();
        }
        let _sent = c.finish().unwrap();
        out
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn content_defines_the_cuts_and_the_key_changes_them() {
        let key = DedupKey::generate();
        let data = noise(20 << 20, 1);
        let a = chunks(&key, &[&data]);
        assert_eq!(a.concat(), data);
        assert!(a.len() >= 8, "{} chunks of 20 MiB", a.len());
        assert!(a.iter().all(|c| c.len() <= MAX_CHUNK));
        // An insertion near the start only changes the chunks around it.
        let mut shifted = noise(1000, 2);
        shifted.extend_from_slice(&data);
        let b = chunks(&key, &[&shifted]);
        let same = b.iter().filter(|c| a.contains(c)).count();
        assert!(same + 2 >= a.len(), "{same} of {} chunks kept", a.len());
        // Another key cuts elsewhere.
        let other = chunks(&DedupKey::generate(), &[&data]);
        assert_ne!(
            other.iter().map(Vec::len).collect::<Vec<_>>(),
            a.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    /// `n` BSON-like documents (a length prefix, then noise) of about
    /// 1 KiB; `changed` get other bytes, of another length.
    fn documents(n: usize, changed: &[usize]) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for i in 0..n {
            let grown = changed.contains(&i);
            let body = noise(
                900 + (i * 37) % 200 + usize::from(grown) * 13,
                i as u64 * 2 + u64::from(grown),
            );
            out.extend_from_slice(&(body.len() as u32 + 5).to_le_bytes());
            out.extend_from_slice(&body);
            out.push(0);
            ends.push(out.len() as u64);
        }
        (out, ends)
    }

    fn document_chunks(key: &DedupKey, prefix: &[u8], docs: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut c = Chunker::new(key, |p: PlainChunk| {
            out.push(p.data);
            Ok(())
        });
        c.write_all(prefix).unwrap();
        c.cut(false).unwrap();
        c.documents();
        for piece in docs.chunks(7_919) {
            c.write_all(piece).unwrap();
        }
        c.cut(false).unwrap();
        let _sent = c.finish().unwrap();
        out
    }

    #[test]
    fn documents_are_cut_where_they_end_and_an_update_costs_a_few_of_them() {
        let key = DedupKey::generate();
        let (docs, ends) = documents(10_000, &[]);
        let a = document_chunks(&key, &noise(5000, 9), &docs);
        let doc_chunks = &a[1..];
        assert_eq!(doc_chunks.concat(), docs);
        // Every cut is a document's end, and the chunks are small.
        let mut at = 0u64;
        for c in doc_chunks {
            at += c.len() as u64;
            assert!(ends.binary_search(&at).is_ok(), "a cut at {at} inside a document");
            assert!(c.len() <= 2 * DOC_MAX_CHUNK);
        }
        let mean = docs.len() / doc_chunks.len();
        assert!((2 << 10..=16 << 10).contains(&mean), "mean chunk {mean} B");
        // 1% of the documents changed in place (each a bit longer): what
        // is stored again is a few percent, not the whole collection.
        let changed: Vec<usize> = (0..100).map(|k| k * 97 + 13).collect();
        let (docs2, _) = documents(10_000, &changed);
        let b = document_chunks(&key, &noise(5000, 9), &docs2);
        assert_eq!(b[1..].concat(), docs2);
        let known: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
        let new_bytes: usize = b.iter().filter(|c| !known.contains(c)).map(Vec::len).sum();
        let share = new_bytes as f64 / docs2.len() as f64;
        assert!(share < 0.08, "{:.1}% stored again", share * 100.0);
    }

    #[test]
    fn a_byte_stream_that_is_not_documents_is_still_cut_whole() {
        let key = DedupKey::generate();
        let data = noise(300_000, 11);
        let a = document_chunks(&key, b"", &data);
        assert_eq!(a.concat(), data);
        assert!(a.iter().all(|c| c.len() <= 2 * DOC_MAX_CHUNK));
    }

    #[test]
    fn a_forced_cut_isolates_what_follows_from_what_precedes() {
        let key = DedupKey::generate();
        let file = noise(3 << 20, 3);
        let a = chunks(&key, &[&noise(700_000, 4), &file]);
        let b = chunks(&key, &[&noise(900_000, 5), &file]);
        let tail_a: Vec<_> = a.iter().skip_while(|c| !file.starts_with(c)).collect();
        let tail_b: Vec<_> = b.iter().skip_while(|c| !file.starts_with(c)).collect();
        assert!(!tail_a.is_empty());
        assert_eq!(tail_a, tail_b);
    }
}
