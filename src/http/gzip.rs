//! gzip of the telemetry path, piece by piece: the text the collectors keep between
//! scrapes (see `collectors::family::TextCache`) is deflated once and its compressed
//! bytes reused, so a scrape compresses only what it wrote afresh (the TTLs, the small
//! families). Prometheus asks for gzip at every scrape; at 1000 tokens that is 2.8 MB to
//! compress (about 7 ms) against some 100 KB.
//!
//! The answer is one gzip member whatever the pieces: each piece is raw deflate ended by
//! a full flush (byte-aligned, not final, nothing refers back into an earlier piece), so
//! the pieces concatenate into one deflate stream, closed by an empty final block; the
//! CRC-32 of the whole is combined from the pieces' (pigz writes the same way).

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use collectors::family::OrderedText;
use flate2::{Compress, Compression, FlushCompress};

/// gzip header: deflate, no name or comment, no time, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block (fixed Huffman: BFINAL, BTYPE 01, end-of-block).
const LAST_BLOCK: [u8; 2] = [0x03, 0x00];

/// One piece of text, deflated.
struct Deflated {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// Raw deflate of `text` at the fastest level, ended by a full flush.
fn deflate(text: &[u8]) -> io::Result<Deflated> {
    let mut compress = Compress::new(Compression::fast(), false);
    let mut bytes = Vec::with_capacity(text.len() / 8 + 64);
    loop {
        if bytes.len() == bytes.capacity() {
            bytes.reserve(bytes.capacity());
        }
        let consumed = compress.total_in() as usize;
        compress
            .compress_vec(&text[consumed..], &mut bytes, FlushCompress::Full)
            .map_err(io::Error::other)?;
        // Done once every byte is in and the flush did not fill the room it had.
        if compress.total_in() as usize == text.len() && bytes.len() < bytes.capacity() {
            break;
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(text);
    Ok(Deflated { bytes, crc })
}

/// The deflated kept pieces of the last gzip answer, for the next one.
#[derive(Default)]
pub struct GzipPieces {
    last: Mutex<Vec<KeptPiece>>,
}

/// A kept piece (the kept buffer, its range) and its compressed bytes.
type KeptPiece = (Arc<[u8]>, Range<usize>, Arc<Deflated>);

impl GzipPieces {
    /// The gzip of `text`, reusing what the last call deflated of the same kept pieces.
    pub fn compress(&self, text: &OrderedText) -> io::Result<Vec<u8>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = Vec::with_capacity(last.len());
        let mut out = Vec::with_capacity(text.len() / 12 + 64);
        out.extend_from_slice(&HEADER);
        let mut crc = crc32fast::Hasher::new();
        for i in 0.. {
            let Some(piece) = text.piece(i) else { break };
            let deflated = match text.kept_piece(i) {
                Some((buf, range)) => {
                    let known = last
                        .iter()
                        .find(|(b, r, _)| Arc::ptr_eq(b, buf) && *r == range)
                        .map(|(_, _, d)| d.clone());
                    let deflated = match known {
                        Some(deflated) => deflated,
                        None => Arc::new(deflate(piece)?),
                    };
                    kept.push((buf.clone(), range, deflated.clone()));
                    deflated
                }
                None => Arc::new(deflate(piece)?),
            };
            out.extend_from_slice(&deflated.bytes);
            crc.combine(&deflated.crc);
        }
        out.extend_from_slice(&LAST_BLOCK);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE: the length modulo 2^32.
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        // Only the pieces of this answer: what the collectors replaced is let go.
        *last = kept;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collectors::family::{TextCache, TextOut};
    use prometheus::proto::MetricType;
    use std::io::Read;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        // A single-member decoder: the answer must be one gzip member.
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut plain)
            .expect("valid gzip");
        plain
    }

    /// A scrape: a kept family written for `key`, and a fresh one.
    fn scrape(kept: &TextCache<u32>, key: u32, fresh: f64) -> OrderedText {
        let mut out = TextOut::default();
        out.family("fresh", "Written each scrape.", MetricType::GAUGE)
            .series(&[], fresh);
        let written = kept.write(key, &mut out, |key, text| {
            let mut family = text.family("kept", "Kept between scrapes.", MetricType::GAUGE);
            for i in 0..5000 {
                // Varied enough to take several deflate blocks.
                family.series_with(
                    &[],
                    &[("n", &format!("{i}-{}", i * 7919 % 1000))],
                    f64::from(*key),
                );
            }
            Ok::<_, ()>(())
        });
        assert_eq!(written, Ok(()));
        out.into_ordered()
    }

    fn plain(text: OrderedText) -> Vec<u8> {
        text.to_vec()
    }

    fn kept_deflated(gzip: &GzipPieces) -> Vec<Arc<Deflated>> {
        let last = gzip.last.lock().unwrap();
        last.iter().map(|(_, _, d)| d.clone()).collect()
    }

    #[test]
    fn pieces_make_one_gzip_member_of_the_whole_text() {
        let gzip = GzipPieces::default();
        let kept = TextCache::default();
        let text = scrape(&kept, 1, 0.5);
        let compressed = gzip.compress(&text).unwrap();
        assert!(
            compressed.len() < text.len() / 4,
            "{} of {}",
            compressed.len(),
            text.len()
        );
        assert_eq!(gunzip(&compressed), plain(text));

        let empty = TextOut::default().into_ordered();
        assert_eq!(gunzip(&gzip.compress(&empty).unwrap()), b"");
    }

    #[test]
    fn kept_text_is_deflated_once_and_let_go_when_replaced() {
        let gzip = GzipPieces::default();
        let kept = TextCache::default();
        let first = scrape(&kept, 1, 0.5);
        gzip.compress(&first).unwrap();
        let deflated = kept_deflated(&gzip);
        assert_eq!(
            deflated.len(),
            1,
            "one kept piece, the fresh one is not kept"
        );

        // Nothing kept changed, the fresh family did: the same compressed piece.
        let second = scrape(&kept, 1, 1.5);
        let compressed = gzip.compress(&second).unwrap();
        let again = kept_deflated(&gzip);
        assert!(Arc::ptr_eq(&deflated[0], &again[0]), "deflated again");
        let text = plain(second);
        assert!(String::from_utf8_lossy(&text).contains("fresh 1.5"));
        assert_eq!(gunzip(&compressed), text);

        // The kept text replaced: deflated anew, the old one let go.
        let third = scrape(&kept, 2, 1.5);
        let compressed = gzip.compress(&third).unwrap();
        let replaced = kept_deflated(&gzip);
        assert_eq!(replaced.len(), 1);
        assert!(!Arc::ptr_eq(&deflated[0], &replaced[0]));
        assert_eq!(Arc::strong_count(&deflated[0]), 2, "let go by the cache");
        assert_eq!(gunzip(&compressed), plain(third));
    }
}
