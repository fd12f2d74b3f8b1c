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
    let mut hasher = Sha256::new();
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
        size += n as u64;
        progress.store(size, Ordering::Relaxed);
        if size.is_multiple_of(256 * BUFFER as u64) {
            check_stop()?;
        }
    }
    Ok((size, hex(&hasher.finalize())))
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
}
