//! Sending the files of one set: streamed, hashed on the way, size-checked after close,
//! optionally read back; memory bounded by chunk size × parts in flight × files at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opendal::Operator;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::DESCRIPTORS;
use crate::copy::{FoundSet, hash_stored, storage_error};
use crate::error::{Error, Result};
use crate::hashing::{hex, sha256_hex};
use crate::parallel::Bounded;
use crate::progress::Task;
use crate::set::MANIFEST;
use crate::state::State;
use crate::tools::process::check_stop;

/// Bytes read and written per step (and the part size for multipart services).
const CHUNK: usize = 8 << 20;
/// Parts of one file in flight at once (multipart services).
const PARTS_IN_FLIGHT: usize = 2;

/// An average-rate bandwidth limit shared by every upload to one destination.
pub struct Limiter {
    rate: Option<u64>,
    sent: tokio::sync::Mutex<(Instant, u64)>,
}

impl Limiter {
    pub fn new(bytes_per_second: Option<u64>) -> Limiter {
        Limiter {
            rate: bytes_per_second.filter(|r| *r > 0),
            sent: tokio::sync::Mutex::new((Instant::now(), 0)),
        }
    }

    async fn pace(&self, bytes: usize) {
        let Some(rate) = self.rate else { return };
        let wait = {
            let mut s = self.sent.lock().await;
            s.1 += bytes as u64;
            Duration::from_secs_f64(s.1 as f64 / rate as f64).saturating_sub(s.0.elapsed())
        };
        tokio::time::sleep(wait).await;
    }
}

pub struct SetJob {
    pub op: Operator,
    pub destination: String,
    pub set: FoundSet,
    /// `<definition>/<set>` on the destination.
    pub remote_dir: String,
    pub state: Arc<State>,
    pub limiter: Arc<Limiter>,
    pub task: Arc<dyn Task>,
    pub concurrency: usize,
    pub readback: bool,
    /// Create folders before uploading (file systems, SFTP, WebDAV; not object stores).
    pub make_dirs: bool,
}

/// One file to send and what it must turn out to be.
#[derive(Clone)]
struct Upload {
    local: PathBuf,
    remote: String,
    sha256: String,
    size: u64,
}

impl SetJob {
    /// Send every file the manifest lists that is not on the destination yet, `concurrency`
    /// at a time. Returns (files, bytes) sent.
    pub async fn send_files(&self) -> Result<(u64, u64)> {
        if self.make_dirs {
            // Concurrent uploads would otherwise race to create the same folders.
            for dir in [
                format!("{}/", self.remote_dir),
                format!("{}/bundle/", self.remote_dir),
            ] {
                self.op
                    .create_dir(&dir)
                    .await
                    .map_err(|e| storage_error(&format!("cannot create {dir}"), e))?;
            }
        }
        let mut running = Bounded::new(self.concurrency);
        let name = &self.set.manifest.set.name;
        for f in &self.set.manifest.files {
            let remote = format!("{}/{}", self.remote_dir, f.path);
            if self
                .state
                .was_sent(&self.destination, name, &f.path, &f.sha256)?
                && self.remote_size(&remote).await? == Some(f.size)
            {
                self.task.advance(f.size);
                continue;
            }
            let upload = Upload {
                local: self.set.dir.join(&f.path),
                remote,
                sha256: f.sha256.clone(),
                size: f.size,
            };
            let (op, limiter, task, state) = (
                self.op.clone(),
                Arc::clone(&self.limiter),
                Arc::clone(&self.task),
                Arc::clone(&self.state),
            );
            let (destination, set, path, readback) = (
                self.destination.clone(),
                name.clone(),
                f.path.clone(),
                self.readback,
            );
            running
                .spawn(async move {
                    send(&op, &upload, &limiter, task.as_ref(), readback).await?;
                    state.file_sent(&destination, &set, &path, &upload.sha256, upload.size)?;
                    Ok::<u64, Error>(upload.size)
                })
                .await;
        }
        let (mut files, mut bytes, mut first_error) = (0, 0, None);
        while let Some(sent) = running.next().await {
            match sent {
                Ok(size) => {
                    files += 1;
                    bytes += size;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok((files, bytes)),
        }
    }

    /// Send SHA256SUMS, then MANIFEST.toml (which must still hash to what was read when the
    /// set was found), and record the set as complete.
    pub async fn finish(&self) -> Result<()> {
        for name in DESCRIPTORS {
            let local = self.set.dir.join(name);
            let bytes = std::fs::read(&local).map_err(Error::io("cannot read", &local))?;
            let sha256 = sha256_hex(&bytes);
            if name == MANIFEST && sha256 != self.set.manifest_sha256 {
                return Err(Error::Failed(format!(
                    "{} changed while being replicated: run darvault audit on the repository",
                    local.display()
                )));
            }
            let upload = Upload {
                local,
                remote: format!("{}/{name}", self.remote_dir),
                sha256,
                size: bytes.len() as u64,
            };
            send(
                &self.op,
                &upload,
                &self.limiter,
                self.task.as_ref(),
                self.readback,
            )
            .await?;
        }
        self.state.set_complete(
            &self.destination,
            &self.set.manifest.set.name,
            &self.set.manifest_sha256,
        )
    }

    async fn remote_size(&self, path: &str) -> Result<Option<u64>> {
        match self.op.stat(path).await {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_error(&format!("cannot check {path}"), e)),
        }
    }
}

async fn send(
    op: &Operator,
    u: &Upload,
    limiter: &Limiter,
    task: &dyn Task,
    readback: bool,
) -> Result<()> {
    let mut file = tokio::fs::File::open(&u.local)
        .await
        .map_err(Error::io("cannot open", &u.local))?;
    let mut writer = op
        .writer_with(&u.remote)
        .chunk(CHUNK)
        .concurrent(PARTS_IN_FLIGHT)
        .await
        .map_err(|e| storage_error(&format!("cannot write {}", u.remote), e))?;
    let mut hasher = Sha256::new();
    let outcome: Result<()> = async {
        loop {
            check_stop()?;
            let mut buf = vec![0u8; CHUNK];
            let n = read_full(&mut file, &mut buf)
                .await
                .map_err(Error::io("cannot read", &u.local))?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            hasher.update(&buf);
            limiter.pace(n).await;
            writer
                .write(buf)
                .await
                .map_err(|e| storage_error(&format!("cannot write {}", u.remote), e))?;
            task.advance(n as u64);
        }
    }
    .await;
    let sent_sha = hex(&hasher.finalize());
    let outcome = outcome.and_then(|_| {
        if sent_sha == u.sha256 {
            Ok(())
        } else {
            Err(Error::Failed(format!(
                "{} does not match its manifest (damaged in the repository?): not sent; run `darvault audit` on the repository",
                u.local.display()
            )))
        }
    });
    if let Err(e) = outcome {
        // Nothing half-written is kept where the service allows it (multipart is dropped).
        let _ = writer.abort().await;
        return Err(e);
    }
    writer
        .close()
        .await
        .map_err(|e| storage_error(&format!("cannot finish {}", u.remote), e))?;
    let meta = op
        .stat(&u.remote)
        .await
        .map_err(|e| storage_error(&format!("cannot check {}", u.remote), e))?;
    if meta.content_length() != u.size {
        return Err(Error::Failed(format!(
            "{} holds {} bytes after upload, {} were sent",
            u.remote,
            meta.content_length(),
            u.size
        )));
    }
    if readback && hash_stored(op, &u.remote, u.size).await? != u.sha256 {
        return Err(Error::Failed(format!(
            "{} read back differs from what was sent",
            u.remote
        )));
    }
    Ok(())
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
