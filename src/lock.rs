//! One writer per copy (repository or destination): backup, replicate, cleanup and a
//! repairing audit each take the copy's lock. A second writer exits at once naming the
//! holder (exit 7), or, with `--lock-wait`, waits that long first (the generated systemd
//! units wait, so their timers never run two writers on one copy at once).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const LOCK_FILE: &str = ".darvault.lock";

/// How long to wait for a lock held by another run, in seconds (`--lock-wait`).
static WAIT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a busy lock is waited for (`--lock-wait`).
pub fn wait() -> std::time::Duration {
    std::time::Duration::from_secs(WAIT_SECS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Wait up to `wait` for a busy lock before giving up (the default is not to wait).
pub fn set_wait(wait: std::time::Duration) {
    WAIT_SECS.store(wait.as_secs(), std::sync::atomic::Ordering::Relaxed);
}

/// Held for as long as it lives; the kernel drops the lock if the process dies, even by kill -9.
pub struct Lock {
    file: Option<File>,
    /// How the file is closed when it is not simply dropped (a lock on a copy's disk).
    close: Option<fn(File)>,
}

impl Lock {
    /// Close the lock's file with `close` (on a copy that may hang: see `copy::disk`).
    pub fn closed_by(mut self, close: fn(File)) -> Lock {
        self.close = Some(close);
        self
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let (Some(file), Some(close)) = (self.file.take(), self.close) {
            close(file);
        }
    }
}

pub fn lock_repository(repository: &Path) -> Result<Lock> {
    lock_path(&repository_lock(repository))
}

/// The lock of a local copy (the repository, a folder named by its path): in its root.
pub fn repository_lock(repository: &Path) -> PathBuf {
    repository.join(LOCK_FILE)
}

/// One writer per destination (replicate, cleanup), kept in the state folder: a remote copy
/// has no place for a lock file.
pub fn lock_destination(config: &crate::config::Config, destination: &str) -> Result<Lock> {
    lock_path(&destination_lock(config, destination))
}

pub fn destination_lock(config: &crate::config::Config, destination: &str) -> PathBuf {
    config
        .state_dir()
        .join("locks")
        .join(format!("replicate-{destination}.lock"))
}

/// Whether another run holds the lock at `path` now: looked at without taking it, creating
/// or writing anything (a plain audit changes nothing on a copy).
pub fn held(path: &Path) -> bool {
    File::open(path)
        .is_ok_and(|file| matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)))
}

/// Take an exclusive lock on `path` (created if needed), or fail at once with who holds it.
pub fn lock_path(path: &Path) -> Result<Lock> {
    let path: PathBuf = path.to_owned();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create", dir))?;
    }
    // A lock file may be in a copy (untrusted): a link there is never followed (it could
    // point at any file of this machine, which the holder's name would overwrite), and a
    // FIFO is never waited on.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(Error::io("cannot open", &path))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Error::Failed(format!(
            "{} is not a regular file: not used as a lock",
            path.display()
        )));
    }
    let wait = wait();
    let started = std::time::Instant::now();
    let mut said = false;
    let taken = loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if started.elapsed() < wait => {
                if !said {
                    tracing::info!(
                        "{} is held by another run: waiting up to {}s",
                        path.display(),
                        wait.as_secs()
                    );
                    said = true;
                }
                crate::tools::process::check_stop()?;
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            other => break other,
        }
    };
    match taken {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "a run that has just started".to_owned(),
                h => h.to_owned(),
            };
            return Err(Error::Busy { path, holder });
        }
        Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock", &path)(e)),
    }
    let who = format!(
        "pid {} on {} since {}",
        std::process::id(),
        crate::host_name(),
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::now())
    );
    // Best effort: the lock is what matters, the text only helps the message above.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(who.as_bytes());
    Ok(Lock {
        file: Some(file),
        close: None,
    })
}
