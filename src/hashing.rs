//! SHA-256 of files and bytes (the sha2 crate uses SHA-NI where the CPU has it).

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tools::process::check_stop;

const BUFFER: usize = 1 << 20;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Size and SHA-256 of a file, in one streaming read.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(Error::io("cannot open", path))?;
    hash_open(&mut file, path, &AtomicU64::new(0))
}

/// Size and SHA-256 of an open file read to its end, the bytes read so far counted in
/// `progress` as they are.
pub fn hash_open(
    file: &mut std::fs::File,
    path: &Path,
    progress: &AtomicU64,
) -> Result<(u64, String)> {
    hash_read(file, path, progress, None).map(|(size, sha, _)| (size, sha))
}

/// Size and SHA-256 of a file, and with `part` the SHA-256 of each run of `part` bytes (the
/// last may be shorter), in one streaming read.
pub fn hash_file_parts(path: &Path, part: Option<u64>) -> Result<(u64, String, Vec<String>)> {
    let mut file = std::fs::File::open(path).map_err(Error::io("cannot open", path))?;
    hash_read(&mut file, path, &AtomicU64::new(0), part)
}

fn hash_read(
    file: &mut std::fs::File,
    path: &Path,
    progress: &AtomicU64,
    part: Option<u64>,
) -> Result<(u64, String, Vec<String>)> {
    let mut hasher = Sha256::new();
    let mut parts = part.map(|size| Parts {
        size: size.max(1),
        hasher: Sha256::new(),
        filled: 0,
        done: Vec::new(),
    });
    let mut buf = vec![0u8; BUFFER];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(Error::io("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(parts) = &mut parts {
            parts.update(&buf[..n]);
        }
        size += n as u64;
        progress.store(size, Ordering::Relaxed);
        if size.is_multiple_of(256 * BUFFER as u64) {
            check_stop()?;
        }
    }
    let parts = parts.map(Parts::finish).unwrap_or_default();
    Ok((size, hex(&hasher.finalize()), parts))
}

/// The digests of a file's consecutive runs of `size` bytes, as they are read.
struct Parts {
    size: u64,
    hasher: Sha256,
    filled: u64,
    done: Vec<String>,
}

impl Parts {
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.size - self.filled).min(bytes.len() as u64) as usize;
            self.hasher.update(&bytes[..room]);
            self.filled += room as u64;
            bytes = &bytes[room..];
            if self.filled == self.size {
                self.done.push(hex(&self.hasher.finalize_reset()));
                self.filled = 0;
            }
        }
    }

    /// Every part's digest; an empty file is one empty part.
    fn finish(mut self) -> Vec<String> {
        if self.filled > 0 || self.done.is_empty() {
            self.done.push(hex(&self.hasher.finalize()));
        }
        self.done
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parts_are_hashed_run_by_run_in_the_same_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        let bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &bytes).unwrap();
        let (size, whole, parts) = super::hash_file_parts(&file, Some(1 << 20)).unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(whole, super::sha256_hex(&bytes));
        let expected: Vec<String> = bytes.chunks(1 << 20).map(super::sha256_hex).collect();
        assert_eq!(parts, expected);
        let (_, _, none) = super::hash_file_parts(&file, None).unwrap();
        assert!(none.is_empty());
    }
}
