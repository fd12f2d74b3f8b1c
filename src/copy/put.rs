//! Putting a local file on a copy: streamed, hashed on the way, paced, size-checked after
//! close, optionally read back; every step under the copy's stall deadline, temporary
//! failures tried again within its retry budget, and an fs copy's mount checked before and
//! after each file. Memory stays bounded by chunk size × parts in flight.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::Store;
use super::backend::{Failure, Io, Sink};
use super::failure::Retry;
use crate::error::{Error, Result};
use crate::hashing::hex;
use crate::progress::Task;
use crate::tools::process::check_stop;

/// Bytes read and written per step (and the part size for multipart services).
pub const CHUNK: usize = 8 << 20;
/// Parts of one file in flight at once (multipart services). One: the write of the next
/// part then waits for it, under darvault's stall deadline (a part uploaded in the
/// background was seen stalled only by OpenDAL's own timeout, which a retry then
/// doubled); files go four at a time, so the link stays busy.
pub(super) const PARTS_IN_FLIGHT: usize = 1;
/// The suffix of a file being written, before it is proven and moved into place.
pub const PARTIAL: &str = ".darvault-partial";

/// An average-rate bandwidth limit shared by every upload to one copy.
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

    /// How long one chunk may take at this rate (added to the stall deadline).
    fn chunk_time(&self) -> Duration {
        match self.rate {
            Some(rate) => Duration::from_secs_f64((CHUNK * PARTS_IN_FLIGHT) as f64 / rate as f64),
            None => Duration::ZERO,
        }
    }
}

/// One file to put: where from, where to, what it must turn out to be, how it is paced and
/// its progress counted.
#[derive(Clone, Copy)]
struct Piece<'a> {
    local: &'a Path,
    remote: &'a str,
    expected: &'a Expected<'a>,
    limiter: &'a Limiter,
    task: &'a dyn Task,
}

/// What a file must turn out to be on the copy.
pub struct Expected<'a> {
    pub size: u64,
    pub sha256: &'a str,
    /// A program (a bundled binary): made executable where the copy keeps modes, so that a
    /// rescue machine can run it straight from the copy.
    pub executable: bool,
    /// The part size its manifest records its parts' digests for: a file sent in parts is
    /// cut there, so the checksum the server keeps is the one the manifest gives.
    pub part: Option<u64>,
}

impl Store {
    /// Put `local` at `remote`: only bytes that hash to `expected` are kept. They are
    /// written under a temporary name and moved into place once proven (object stores, which
    /// cannot rename, replace an object only when its upload completes), so a failed or
    /// refused upload never harms a good file already there.
    pub async fn put_file(
        &self,
        local: &Path,
        remote: &str,
        expected: &Expected<'_>,
        limiter: &Limiter,
        task: &dyn Task,
        readback: bool,
    ) -> Result<()> {
        let temp = self.temp_name(remote);
        self.retrying(&format!("cannot send {remote}"), || async {
            self.check_mount()?;
            let piece = Piece {
                local,
                remote: &temp,
                expected,
                limiter,
                task,
            };
            let mut sink = self.open_sink(&temp, expected).await?;
            self.pump(sink.as_mut(), &piece).await?;
            drop(sink);
            match self.prove_upload(&temp, expected, readback).await {
                // Bytes that are not what was sent never stay under a temporary name (on
                // an object store they are under the file's own: the next run sends it again).
                Err(e) if temp != remote && !matches!(e, Error::Stalled { .. }) => {
                    let _ = tokio::time::timeout(self.stall, self.remove(&temp)).await;
                    return Err(e);
                }
                proven => proven?,
            }
            crate::fault::point(crate::fault::PLACE);
            self.move_into_place(&temp, remote).await?;
            crate::fault::point(crate::fault::PUT);
            Ok(())
        })
        .await
    }

    /// What was written is on the disk the copy was opened on, has the size sent, and (with
    /// `readback`) reads back as the bytes sent.
    async fn prove_upload(
        &self,
        temp: &str,
        expected: &Expected<'_>,
        readback: bool,
    ) -> Result<()> {
        self.check_mount()?;
        if self.anchor.is_none() {
            let what = format!("cannot check {temp}");
            let size = self.within(&what, self.backend.stat(temp)).await?;
            if size != expected.size {
                return Err(Error::Failed(format!(
                    "{temp} holds {size} bytes after upload, {} were sent",
                    expected.size
                )));
            }
        }
        if readback && self.hash(temp).await?.map(|h| h.1).as_deref() != Some(expected.sha256) {
            return Err(Error::Failed(format!(
                "{temp} read back differs from what was sent"
            )));
        }
        Ok(())
    }

    /// Where a file is written before it is proven: `<name>.darvault-partial` where the copy
    /// can rename, the name itself on object stores (an upload replaces the object only when
    /// it completes). Audit and replicate take such a leftover for what it is.
    fn temp_name(&self, remote: &str) -> String {
        if self.anchor.is_some() || self.backend.capabilities().atomic_rename {
            format!("{remote}{PARTIAL}")
        } else {
            remote.to_owned()
        }
    }

    async fn move_into_place(&self, temp: &str, remote: &str) -> Result<()> {
        if temp == remote {
            return Ok(());
        }
        let what = format!("cannot move {temp} into place");
        if let Some(anchor) = self.anchor.clone() {
            let (temp, remote) = (temp.to_owned(), remote.to_owned());
            return self.on_disk(&what, move || anchor.rename(&temp, &remote))?;
        }
        if self
            .within(&what, self.backend.rename(temp, remote))
            .await
            .is_ok()
        {
            return Ok(());
        }
        // SFTP's rename refuses to replace a file: the old one goes first (the proven new
        // bytes are safe under the temporary name meanwhile).
        let _ = self.within(&what, self.backend.remove(remote)).await;
        self.within(&what, self.backend.rename(temp, remote)).await
    }

    /// Where the file's bytes go: on a local copy, a file made through its anchored root;
    /// else the service's writer (multipart where it has it, one streamed request on WebDAV).
    async fn open_sink<'a>(
        &'a self,
        remote: &'a str,
        expected: &Expected<'a>,
    ) -> Result<Box<dyn Sink + 'a>> {
        let what = format!("cannot write {remote}");
        let Some(anchor) = self.anchor.clone() else {
            let writer = self
                .backend
                .writer(remote, expected.size, expected.sha256, expected.part);
            return self.within(&what, writer).await;
        };
        let mode = if expected.executable { 0o755 } else { 0o644 };
        let remote = remote.to_owned();
        let created = self.on_disk(&what, move || anchor.create(&remote, mode))??;
        Ok(Box::new(LocalFile {
            file: Some(tokio::fs::File::from_std(created)),
            size: expected.size,
        }))
    }

    /// The file's chunks, read, hashed and paced, into `sink`, each step under the stall
    /// deadline. Nothing half-written is kept: a failed upload is aborted and its partial
    /// file removed (an object written under its own name, on object stores, is never
    /// removed: the upload that failed did not replace it). A copy that stopped answering
    /// is asked nothing more.
    async fn pump(&self, sink: &mut (dyn Sink + '_), piece: &Piece<'_>) -> Result<()> {
        let what = format!("cannot write {}", piece.remote);
        let slack = piece.limiter.chunk_time();
        let mut reader = Hashed::open(piece.local, piece.expected, self.stall).await?;
        let sent: Result<()> = async {
            while let Some(chunk) = reader.next().await? {
                let n = chunk.len() as u64;
                piece.limiter.pace(chunk.len()).await;
                self.within_plus(&what, slack, sink.write(chunk)).await?;
                piece.task.advance(n);
            }
            self.within_plus(&what, slack, sink.close()).await
        }
        .await;
        match sent {
            Err(e) if !matches!(e, Error::Stalled { .. }) => {
                let _ = tokio::time::timeout(self.stall, sink.abort()).await;
                if piece.remote.ends_with(PARTIAL) {
                    let _ = tokio::time::timeout(self.stall, self.remove(piece.remote)).await;
                }
                Err(e)
            }
            sent => sent,
        }
    }
}

/// A file of a local copy being written: synced at the end, its size checked on the open
/// file.
struct LocalFile {
    file: Option<tokio::fs::File>,
    size: u64,
}

impl Sink for LocalFile {
    fn write(&mut self, chunk: Vec<u8>) -> Io<'_, ()> {
        use tokio::io::AsyncWriteExt;
        Box::pin(async move {
            let file = self.file.as_mut().expect("open until closed");
            file.write_all(&chunk).await.map_err(|e| Failure::of_io(&e))
        })
    }

    fn close(&mut self) -> Io<'_, ()> {
        use tokio::io::AsyncWriteExt;
        Box::pin(async move {
            let mut out = self.file.take().expect("open until closed");
            let failed = |e: std::io::Error| Failure::of_io(&e);
            out.flush().await.map_err(failed)?;
            out.sync_all().await.map_err(failed)?;
            let written = out.metadata().await.map_err(failed)?.len();
            if written != self.size {
                return Err(Failure::other(
                    Retry::Useless,
                    format!(
                        "it holds {written} bytes after writing, {} were written",
                        self.size
                    ),
                ));
            }
            // A close waits for the disk: never here (see `disk::close`).
            super::disk::close(out.into_std().await);
            Ok(())
        })
    }

    fn abort(&mut self) -> Io<'_, ()> {
        self.file = None;
        Box::pin(async { Ok(()) })
    }
}

/// A local file read in chunks and hashed on the way. The last chunk is handed out only
/// when the whole file hashes to what is expected, so that a write can still be aborted.
struct Hashed<'a> {
    file: tokio::fs::File,
    /// The file may be on another copy that can hang (a repair from a replica).
    stall: Duration,
    local: &'a Path,
    expected: &'a Expected<'a>,
    hasher: Sha256,
    done: u64,
    finished: bool,
}

impl<'a> Hashed<'a> {
    async fn open(
        local: &'a Path,
        expected: &'a Expected<'a>,
        stall: Duration,
    ) -> Result<Hashed<'a>> {
        let file = tokio::time::timeout(stall, tokio::fs::File::open(local))
            .await
            .map_err(|_| reading_stalled(local, stall))?
            .map_err(Error::io("cannot open", local))?;
        Ok(Hashed {
            file,
            stall,
            local,
            expected,
            hasher: Sha256::new(),
            done: 0,
            finished: false,
        })
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        if self.finished {
            return Ok(None);
        }
        check_stop()?;
        let mut buf = vec![0u8; CHUNK];
        let n = tokio::time::timeout(self.stall, read_full(&mut self.file, &mut buf))
            .await
            .map_err(|_| reading_stalled(self.local, self.stall))?
            .map_err(Error::io("cannot read", self.local))?;
        buf.truncate(n);
        self.hasher.update(&buf);
        self.done += n as u64;
        let last = n < CHUNK || self.done >= self.expected.size;
        if last {
            self.finished = true;
            if self.done != self.expected.size
                || hex(&self.hasher.clone().finalize()) != self.expected.sha256
            {
                return Err(Error::Failed(format!(
                    "{} does not match its manifest (damaged in the repository?): not sent; run `darvault audit` on the repository",
                    self.local.display()
                )));
            }
            if n == 0 {
                return Ok(None);
            }
        }
        Ok(Some(buf))
    }
}

fn reading_stalled(local: &Path, stall: Duration) -> Error {
    Error::Stalled {
        what: format!("cannot read {}", local.display()),
        copy: "the disk it is on".into(),
        seconds: stall.as_secs(),
    }
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
