//! The keyed content-defined chunker: FastCDC v2020 (the `fastcdc`
//! crate's cut function) over a secret gear table, so cut points, and so
//! chunk sizes, reveal nothing to whoever lacks the dedup key.

use std::io::{self, Write};

use fastcdc::v2020::{MASKS, cut_gear};

use super::{AVG_CHUNK, DedupKey, MAX_CHUNK, MIN_CHUNK};

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
    send: F,
}

impl<F: ChunkOut> Chunker<F> {
    pub(crate) fn new(key: &DedupKey, send: F) -> Self {
        let (gear, gear_ls) = key.gear();
        // Normalisation level 1, as the crate's default.
        let bits = AVG_CHUNK.trailing_zeros() as usize;
        Chunker {
            buf: Vec::with_capacity(MAX_CHUNK * 2),
            start: 0,
            secret: false,
            gear,
            gear_ls,
            mask_s: MASKS[bits + 1],
            mask_l: MASKS[bits - 1],
            send,
        }
    }

    /// Ends the current chunk here, and starts secret (or shared) chunks.
    pub(crate) fn cut(&mut self, secret: bool) -> io::Result<()> {
        while self.start < self.buf.len() {
            self.emit_one()?;
        }
        self.buf.clear();
        self.start = 0;
        self.secret = secret;
        Ok(())
    }

    /// Emits the next content-defined chunk of the buffer (all of it when
    /// it is shorter than the smallest chunk).
    fn emit_one(&mut self) -> io::Result<()> {
        // Secrets are cut at fixed sizes: their chunk lengths (public, in
        // the chunk list) then say nothing the dedup key could relate to
        // their content.
        if self.secret {
            let cut = (self.buf.len() - self.start).min(AVG_CHUNK);
            let data = self.buf[self.start..self.start + cut].to_vec();
            self.start += cut;
            return self.send.send(PlainChunk { data, secret: true });
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
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        // Only cut with a whole maximum chunk in hand: a cut found in
        // less could be a different one than in the full stream.
        while self.buf.len() - self.start >= MAX_CHUNK {
            self.emit_one()?;
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
