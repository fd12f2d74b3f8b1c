//! Putting a local file on a copy: streamed, hashed on the way, paced, size-checked after
//! close, optionally read back; every step under the copy's stall deadline, temporary
//! failures tried again within its retry budget, and an fs copy's mount checked before and
//! after each file. Memory stays bounded by chunk size × parts in flight.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::Store;
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
const PARTS_IN_FLIGHT: usize = 1;
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
            match (&self.anchor, &self.dav) {
                (Some(anchor), _) => self.put_local(anchor, &piece).await?,
                (None, Some(_)) => self.put_streamed(&piece).await?,
                (None, None) => self.put_written(&piece).await?,
            }
            // What was written went to the disk the copy was opened on; is it still there?
            self.check_mount()?;
            if self.anchor.is_none() {
                let what = format!("cannot check {temp}");
                let meta = self.within(&what, self.op.stat(&temp)).await?;
                if meta.content_length() != expected.size {
                    return Err(Error::Failed(format!(
                        "{temp} holds {} bytes after upload, {} were sent",
                        meta.content_length(),
                        expected.size
                    )));
                }
            }
            if readback && self.hash(&temp).await?.map(|h| h.1).as_deref() != Some(expected.sha256)
            {
                return Err(Error::Failed(format!(
                    "{temp} read back differs from what was sent"
                )));
            }
            self.move_into_place(&temp, remote).await
        })
        .await
    }

    /// Where a file is written before it is proven: `<name>.darvault-partial` where the copy
    /// can rename, the name itself on object stores (an upload replaces the object only when
    /// it completes). Audit and replicate take such a leftover for what it is.
    fn temp_name(&self, remote: &str) -> String {
        if self.anchor.is_some() || self.op.info().capability().rename {
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
            .within(&what, self.op.rename(temp, remote))
            .await
            .is_ok()
        {
            return Ok(());
        }
        // SFTP's rename refuses to replace a file: the old one goes first (the proven new
        // bytes are safe under the temporary name meanwhile).
        let _ = self.within(&what, self.op.delete(remote)).await;
        self.within(&what, self.op.rename(temp, remote)).await
    }

    /// Into a local copy, through its anchored root; synced, and its size checked on the
    /// open file.
    async fn put_local(&self, anchor: &super::anchored::Anchored, piece: &Piece<'_>) -> Result<()> {
        let Piece {
            local,
            remote,
            expected,
            limiter,
            task,
        } = *piece;
        use tokio::io::AsyncWriteExt;
        let what = format!("cannot write {remote}");
        let failed = |e: std::io::Error| match super::failure::os_cause(&e) {
            Some((retry, cause)) => Error::Storage {
                what: self.on_this(&what),
                cause,
                retry: retry == super::failure::Retry::Helps,
            },
            None => Error::io("cannot write", Path::new(remote))(e),
        };
        let mode = if expected.executable { 0o755 } else { 0o644 };
        let created = {
            let (anchor, remote) = (anchor.clone(), remote.to_owned());
            self.on_disk(&what, move || anchor.create(&remote, mode))??
        };
        let mut out = tokio::fs::File::from_std(created);
        let slack = limiter.chunk_time();
        let mut reader = Hashed::open(local, expected, self.stall).await?;
        let deadline = self.stall + slack;
        let outcome: Result<()> = async {
            while let Some(chunk) = reader.next().await? {
                limiter.pace(chunk.len()).await;
                match tokio::time::timeout(deadline, out.write_all(&chunk)).await {
                    Ok(written) => written.map_err(failed)?,
                    Err(_) => return Err(self.stalled(&what)),
                }
                task.advance(chunk.len() as u64);
            }
            match tokio::time::timeout(deadline, async {
                out.flush().await?;
                out.sync_all().await?;
                out.metadata().await
            })
            .await
            {
                Ok(Ok(meta)) if meta.len() == expected.size => {
                    // A close waits for the disk: never here (see `disk::close`).
                    super::disk::close(out.into_std().await);
                    Ok(())
                }
                Ok(Ok(meta)) => Err(Error::Failed(format!(
                    "{remote} holds {} bytes after writing, {} were written",
                    meta.len(),
                    expected.size
                ))),
                Ok(Err(e)) => Err(failed(e)),
                Err(_) => Err(self.stalled(&what)),
            }
        }
        .await;
        if outcome
            .as_ref()
            .is_err_and(|e| !matches!(e, Error::Stalled { .. }))
        {
            let _ = self.remove(remote).await;
        }
        outcome
    }

    /// Through an OpenDAL writer (multipart where the service has it).
    async fn put_written(&self, piece: &Piece<'_>) -> Result<()> {
        let Piece {
            local,
            remote,
            expected,
            limiter,
            task,
        } = *piece;
        let what = format!("cannot write {remote}");
        let mut writer = self
            .within(
                &what,
                self.op
                    .writer_with(remote)
                    .chunk(CHUNK)
                    .concurrent(PARTS_IN_FLIGHT),
            )
            .await?;
        let slack = limiter.chunk_time();
        let mut reader = Hashed::open(local, expected, self.stall).await?;
        let outcome: Result<()> = async {
            while let Some(chunk) = reader.next().await? {
                let n = chunk.len() as u64;
                limiter.pace(chunk.len()).await;
                self.within_plus(&what, slack, writer.write(chunk)).await?;
                task.advance(n);
            }
            Ok(())
        }
        .await;
        let outcome = match outcome {
            Ok(()) => self
                .within_plus(&what, slack, writer.close())
                .await
                .map(|_| ()),
            Err(e @ Error::Stalled { .. }) => Err(e),
            Err(e) => {
                let _ = tokio::time::timeout(self.stall, writer.abort()).await;
                Err(e)
            }
        };
        if outcome
            .as_ref()
            .is_err_and(|e| !matches!(e, Error::Stalled { .. }))
        {
            // Nothing half-written is kept: a multipart upload is dropped above, a partial
            // file removed. An object written under its own name (object stores) is never
            // deleted: the upload that failed did not replace it. (Nothing is tried when the
            // copy stopped answering.)
            if remote.ends_with(PARTIAL) {
                let _ = tokio::time::timeout(self.stall, self.op.delete(remote)).await;
            }
        }
        outcome
    }

    /// As one streamed request body (WebDAV).
    async fn put_streamed(&self, piece: &Piece<'_>) -> Result<()> {
        let Piece {
            local,
            remote,
            expected,
            limiter,
            task,
        } = *piece;
        let dav = self.dav.as_ref().expect("a WebDAV copy");
        let what = self.on_this(&format!("cannot write {remote}"));
        let upload = dav.start(remote, expected.size);
        let slack = limiter.chunk_time();
        let mut reader = Hashed::open(local, expected, self.stall).await?;
        let outcome: Result<()> = async {
            while let Some(chunk) = reader.next().await? {
                let n = chunk.len() as u64;
                limiter.pace(chunk.len()).await;
                match tokio::time::timeout(self.stall + slack, upload.send(chunk)).await {
                    Ok(Ok(())) => {}
                    // The request ended early: its answer says why.
                    Ok(Err(())) => return Err(Error::Failed(String::new())),
                    Err(_) => return Err(self.stalled(&what)),
                }
                task.advance(n);
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => match tokio::time::timeout(self.stall + slack, upload.finish(&what)).await {
                Ok(answer) => answer,
                Err(_) => Err(self.stalled(&what)),
            },
            Err(Error::Failed(m)) if m.is_empty() => {
                match tokio::time::timeout(self.stall, upload.finish(&what)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(self.stalled(&what)),
                }
            }
            Err(e) => {
                let stalled = matches!(e, Error::Stalled { .. });
                upload.abort();
                if !stalled && remote.ends_with(PARTIAL) {
                    let _ = tokio::time::timeout(self.stall, self.op.delete(remote)).await;
                }
                Err(e)
            }
        }
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
