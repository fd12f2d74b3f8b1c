//! The writer lock a remote copy (SFTP, S3, WebDAV…) carries itself: `.darvault/lock`, an
//! object naming its holder (host, pid, run, command, start) and a heartbeat the holder
//! rewrites every minute. Any machine and any state folder that writes to the copy sees it.
//! A lock whose heartbeat stopped for `STALE` (its holder died or lost the copy), or whose
//! holder is a process of this machine that is gone, is taken over with a notice.
//!
//! Where the service creates a file only if it is absent in one step (S3's `If-None-Match`,
//! SFTP's exclusive open), a free lock is taken that way; elsewhere (WebDAV) it is written.
//! Either way it is read back: two runs that write it at the same moment both read back one
//! name, and only its holder goes on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Store;
use super::backend::Backend;
use crate::error::{Error, Result};

/// The lock's place on a copy.
pub const LOCK: &str = ".darvault/lock";
/// How often the holder rewrites its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(60);
/// A lock whose heartbeat is older than this is abandoned.
pub const STALE: Duration = Duration::from_secs(5 * 60);
/// How long a run waits after writing the lock before reading it back.
const SETTLE: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Holder {
    host: String,
    pid: u32,
    /// Tells two runs of one pid apart (a reused pid, a second take in one run).
    run: String,
    command: String,
    started: jiff::Timestamp,
    heartbeat: jiff::Timestamp,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, since {}, alive at {})",
            self.command,
            self.pid,
            self.host,
            self.started
                .round(jiff::Unit::Second)
                .unwrap_or(self.started),
            self.heartbeat
                .round(jiff::Unit::Second)
                .unwrap_or(self.heartbeat)
        )
    }

    /// Whether the holder is gone: its heartbeat stopped, or it was a process of this
    /// machine that no longer runs.
    fn is_gone(&self) -> bool {
        let silent = jiff::Timestamp::now().duration_since(self.heartbeat);
        let stale = silent.unsigned_abs() > STALE && silent.is_positive();
        let dead_here = self.host == crate::host_name()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists();
        stale || dead_here
    }
}

/// A remote copy's writer lock, held until `release` (or, when a run ends without it, until
/// its heartbeat goes stale).
pub struct CopyLock {
    backend: std::sync::Arc<dyn Backend>,
    beating: tokio::task::JoinHandle<()>,
    run: String,
    stall: Duration,
}

impl Store {
    /// Take the copy's own writer lock (remote copies; a local one is locked in its root, see
    /// `writer_locks`). Another live holder: `Busy` naming it, after waiting `--lock-wait`.
    pub async fn take_copy_lock(&self, command: &str) -> Result<Option<CopyLock>> {
        if self.local_root.is_some() {
            return Ok(None);
        }
        let now = jiff::Timestamp::now();
        let mine = Holder {
            host: crate::host_name(),
            pid: std::process::id(),
            run: format!("{}-{}", std::process::id(), fastrand::u64(..)),
            command: command.to_owned(),
            started: now,
            heartbeat: now,
        };
        let waited_since = std::time::Instant::now();
        loop {
            match self.try_copy_lock(&mine).await? {
                None => break,
                Some(other) if waited_since.elapsed() < crate::lock::wait() => {
                    tracing::info!("{} is held by {}: waiting", self.label(), other.describe());
                    crate::tools::process::check_stop()?;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Some(other) => {
                    return Err(Error::Busy {
                        path: format!("{} ({LOCK})", self.label()).into(),
                        holder: other.describe(),
                    });
                }
            }
        }
        let (backend, run) = (self.backend.clone(), mine.run.clone());
        let beating = tokio::spawn(async move {
            let mut holder = mine;
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                holder.heartbeat = jiff::Timestamp::now();
                if let Ok(bytes) = serde_json::to_vec(&holder) {
                    let _ = tokio::time::timeout(HEARTBEAT, backend.write(LOCK, bytes)).await;
                }
            }
        });
        Ok(Some(CopyLock {
            backend: self.backend.clone(),
            beating,
            run,
            stall: self.stall,
        }))
    }

    /// One try: None when the lock is now `mine`, else the live holder.
    async fn try_copy_lock(&self, mine: &Holder) -> Result<Option<Holder>> {
        let bytes = serde_json::to_vec(mine).expect("a holder serialises");
        let found = self.copy_lock_holder().await?;
        match &found {
            Some(other) if !other.is_gone() => return Ok(Some(other.clone())),
            Some(other) => {
                tracing::warn!(
                    "{}: taking over the lock of {}, which is gone",
                    self.label(),
                    other.describe()
                );
                self.write_small(LOCK, bytes).await?;
            }
            // Where the service creates a file only if it is absent, in one step, two runs
            // that find no lock at the same moment cannot both write one.
            None => match self.create_small(LOCK, bytes.clone()).await? {
                Some(true) => {}
                Some(false) => match self.copy_lock_holder().await? {
                    Some(other) => return Ok(Some(other)),
                    None => return Err(self.unreadable_lock()),
                },
                None => self.write_small(LOCK, bytes).await?,
            },
        }
        // Read back in every case: a service that ignored the condition, or a takeover at
        // the same moment, shows here.
        tokio::time::sleep(SETTLE).await;
        match self.copy_lock_holder().await? {
            Some(read) if read.run == mine.run => Ok(None),
            Some(other) => Ok(Some(other)),
            None => Err(self.unreadable_lock()),
        }
    }

    fn unreadable_lock(&self) -> Error {
        Error::Failed(format!(
            "{}: the lock at {LOCK} is not there or not readable when read back",
            self.label()
        ))
    }

    /// The holder the copy's lock names; None when there is none (or it is unreadable,
    /// which counts as none: it would be rewritten by the next holder).
    async fn copy_lock_holder(&self) -> Result<Option<Holder>> {
        let bytes = self.read_small(LOCK).await?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Whether a live run of any machine holds this remote copy's lock now. A copy that
    /// does not answer is the caller's error (it would not answer the audit either).
    pub async fn copy_lock_held(&self) -> Result<bool> {
        if self.local_root.is_some() {
            return Ok(false);
        }
        Ok(matches!(self.copy_lock_holder().await?, Some(h) if !h.is_gone()))
    }
}

impl CopyLock {
    /// Let go once the run on the copy ended with `ended`: the heartbeat stops and the lock
    /// goes (when it is still ours). After a stop request, or when the copy itself failed
    /// (it would not answer this either: waiting for it again would add a deadline to the
    /// one that ran out), it is left: a run on this machine takes it over at once, one
    /// elsewhere once it is stale.
    pub async fn release<T>(self, ended: &Result<T>) {
        self.beating.abort();
        let copy_failed = matches!(
            ended,
            Err(Error::Interrupted | Error::Stalled { .. } | Error::Storage { .. })
        );
        if copy_failed {
            return;
        }
        let ours = match tokio::time::timeout(self.stall, self.backend.read(LOCK)).await {
            Ok(Ok(bytes)) => {
                serde_json::from_slice::<Holder>(&bytes).is_ok_and(|h| h.run == self.run)
            }
            _ => false,
        };
        if ours {
            let _ = tokio::time::timeout(self.stall, self.backend.remove(LOCK)).await;
        }
    }
}

impl Drop for CopyLock {
    fn drop(&mut self) {
        // Not released (an error ended the run): the heartbeat stops, and the lock is stale
        // for other machines after `STALE`, at once for runs on this one.
        self.beating.abort();
    }
}
