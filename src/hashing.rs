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
    let file = std::fs::File::open(path).map_err(Error::io("cannot open", path))?;
    hash_open(file, path, &AtomicU64::new(0))
}

/// Size and SHA-256 of a file that is not a symbolic link (None when it is missing), the
/// bytes read so far counted in `progress` as they are.
pub fn hash_unlinked(path: &Path, progress: &AtomicU64) -> Result<Option<(u64, String)>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => hash_open(file, path, progress).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot open", path)(e)),
    }
}

fn hash_open(mut file: std::fs::File, path: &Path, progress: &AtomicU64) -> Result<(u64, String)> {
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

/// Size and SHA-256 of each file of a copy (None where it is missing, unreadable or a
/// symbolic link: a copy is read only inside its own folder), several at once: one thread per
/// core, each taking the next file.
pub fn hash_files(paths: &[std::path::PathBuf]) -> Vec<Option<(u64, String)>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(paths.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<(u64, String)>>> =
        paths.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    *results[i].lock().expect("hash result") =
                        hash_unlinked(path, &AtomicU64::new(0)).ok().flatten();
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().expect("hash result"))
        .collect()
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
