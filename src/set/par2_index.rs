//! The block checksums a PAR2 index file carries: for every file it protects, an MD5 of each
//! of its blocks (the "IFSC" packets of the PAR2 2.0 format). Once the index itself is proven
//! against the manifest, any block of a protected file can be proven on its own, without
//! reading the rest of the file: a restore of one file uses this for the slices dar opens only
//! for their header and trailer.

use std::collections::HashMap;
use std::ops::Range;

use md5::{Digest, Md5};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"PAR2\0PKT";
const HEADER: usize = 64;
const MAIN: &[u8; 16] = b"PAR 2.0\0Main\0\0\0\0";
const FILE_DESCRIPTION: &[u8; 16] = b"PAR 2.0\0FileDesc";
const BLOCK_SUMS: &[u8; 16] = b"PAR 2.0\0IFSC\0\0\0\0";

pub struct BlockSums {
    block_size: u64,
    /// File name → its length and the MD5 of each block (the last one padded with zeros).
    files: HashMap<String, (u64, Vec<[u8; 16]>)>,
}

impl BlockSums {
    /// Parse the packets of a PAR2 index; packets of other kinds are skipped.
    pub fn parse(bytes: &[u8]) -> Result<BlockSums> {
        let bad = |why: &str| Error::Failed(format!("not a usable PAR2 index: {why}"));
        let mut block_size = None;
        let mut names: HashMap<[u8; 16], (String, u64)> = HashMap::new();
        let mut sums: HashMap<[u8; 16], Vec<[u8; 16]>> = HashMap::new();
        let mut at = 0;
        while at + HEADER <= bytes.len() {
            if &bytes[at..at + 8] != MAGIC {
                return Err(bad("no packet where one should start"));
            }
            let length = usize::try_from(u64_at(bytes, at + 8)).unwrap_or(usize::MAX);
            if length < HEADER || !length.is_multiple_of(4) || length > bytes.len() - at {
                return Err(bad("a packet's length is out of bounds"));
            }
            let kind = &bytes[at + 48..at + 64];
            let body = &bytes[at + HEADER..at + length];
            if kind == MAIN && body.len() >= 12 {
                block_size = Some(u64_at(body, 0));
            } else if kind == FILE_DESCRIPTION && body.len() >= 56 {
                let name = String::from_utf8_lossy(&body[56..])
                    .trim_end_matches('\0')
                    .to_owned();
                names.insert(id(body), (name, u64_at(body, 48)));
            } else if kind == BLOCK_SUMS && body.len() >= 16 {
                let blocks = body[16..]
                    .chunks_exact(20)
                    .map(|entry| entry[..16].try_into().expect("16 bytes"))
                    .collect();
                sums.insert(id(body), blocks);
            }
            at += length;
        }
        let block_size = block_size
            .filter(|b| *b > 0)
            .ok_or_else(|| bad("no main packet"))?;
        let files = names
            .into_iter()
            .filter_map(|(file, (name, length))| {
                let blocks = sums.remove(&file)?;
                (blocks.len() as u64 == length.div_ceil(block_size))
                    .then_some((name, (length, blocks)))
            })
            .collect();
        Ok(BlockSums { block_size, files })
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The length of `file` as the index records it; None for a file it does not protect.
    pub fn length(&self, file: &str) -> Option<u64> {
        self.files.get(file).map(|(length, _)| *length)
    }

    /// The byte ranges of whole blocks of `file` that cover `wanted` (clipped to the file).
    pub fn blocks_covering(&self, file: &str, wanted: Range<u64>) -> Option<Range<u64>> {
        let (length, _) = self.files.get(file)?;
        let start = wanted.start.min(*length) / self.block_size * self.block_size;
        let end = wanted.end.min(*length).div_ceil(self.block_size) * self.block_size;
        Some(start..end.min(*length))
    }

    /// Whether `data`, read from `file` at `offset` (a block boundary), is exactly what the
    /// index recorded for those blocks.
    pub fn proves(&self, file: &str, offset: u64, data: &[u8]) -> bool {
        let Some((length, blocks)) = self.files.get(file) else {
            return false;
        };
        if data.is_empty()
            || !offset.is_multiple_of(self.block_size)
            || offset + data.len() as u64 > *length
        {
            return false;
        }
        let first = (offset / self.block_size) as usize;
        data.chunks(self.block_size as usize)
            .enumerate()
            .all(|(i, chunk)| {
                let mut md5 = Md5::new();
                md5.update(chunk);
                // The last block of a file is hashed padded with zeros to the block size.
                let padding = self.block_size as usize - chunk.len();
                let is_files_end = offset + data.len() as u64 == *length;
                if padding > 0 && !is_files_end {
                    return false;
                }
                md5.update(vec![0u8; padding]);
                blocks.get(first + i) == Some(&md5.finalize().into())
            })
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn id(body: &[u8]) -> [u8; 16] {
    body[..16].try_into().expect("16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet of `kind` with `body`, as par2 writes it (the packet's own MD5 is not checked
    /// here: the index is proven by its SHA-256 before it is parsed).
    fn packet(kind: &[u8; 16], body: &[u8]) -> Vec<u8> {
        let mut p = MAGIC.to_vec();
        p.extend_from_slice(&((HEADER + body.len()) as u64).to_le_bytes());
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(kind);
        p.extend_from_slice(body);
        p
    }

    fn md5_of(data: &[u8]) -> [u8; 16] {
        Md5::digest(data).into()
    }

    #[test]
    fn blocks_are_proven_one_by_one_and_the_last_one_padded() {
        let data: Vec<u8> = (0..10u8).collect();
        let file_id = [7u8; 16];
        let mut main = 4u64.to_le_bytes().to_vec();
        main.extend_from_slice(&1u32.to_le_bytes());
        main.extend_from_slice(&file_id);
        let mut description = file_id.to_vec();
        description.extend_from_slice(&[0; 32]);
        description.extend_from_slice(&10u64.to_le_bytes());
        description.extend_from_slice(b"a.1.dar\0");
        let mut sums = file_id.to_vec();
        for block in [&data[0..4], &data[4..8], &[8, 9, 0, 0][..]] {
            sums.extend_from_slice(&md5_of(block));
            sums.extend_from_slice(&[0; 4]);
        }
        let mut index = packet(MAIN, &main);
        index.extend(packet(FILE_DESCRIPTION, &description));
        index.extend(packet(BLOCK_SUMS, &sums));

        let b = BlockSums::parse(&index).unwrap();
        assert_eq!(b.blocks_covering("a.1.dar", 0..1), Some(0..4));
        assert_eq!(b.blocks_covering("a.1.dar", 5..10), Some(4..10));
        assert!(b.proves("a.1.dar", 0, &data[0..4]));
        assert!(b.proves("a.1.dar", 4, &data[4..10]));
        assert!(!b.proves(
            "a.1.dar",
            4,
            &data[4..8].iter().map(|x| x ^ 1).collect::<Vec<_>>()
        ));
        assert!(
            !b.proves("a.1.dar", 2, &data[2..6]),
            "not on a block boundary"
        );
        assert!(
            !b.proves("a.1.dar", 4, &data[4..6]),
            "a short block inside the file"
        );
        assert!(
            !b.proves("b.1.dar", 0, &data[0..4]),
            "a file the index does not protect"
        );
        assert!(BlockSums::parse(&index[..70]).is_err());
    }
}
