//! What a copy on a local filesystem (the repository, a USB disk, an sshfs mount) offers
//! beyond the operations every copy has: its files read where they are instead of
//! downloaded, scratch folders on the same filesystem (hard links, not copies), free space.
//! Callers ask these questions of any copy; a remote one answers "no" and they download.

use std::path::{Path, PathBuf};

use super::{FoundSet, Store};
use crate::error::{Error, Result};

/// Where repairs of a local copy keep their scratch folders.
const SCRATCH: &str = ".darvault/scratch";

impl Store {
    /// The file or folder at `path` where it can be read in place: a local copy's own path
    /// (callers that must not follow a link check `is_link` first); `None` for a remote copy.
    pub fn in_place(&self, path: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(path))
    }

    /// A set's folder relative to the copy's root, as the copy's operations take it.
    pub fn location(&self, set: &FoundSet) -> String {
        self.relative(&set.dir)
    }

    /// A folder found on this copy, relative to its root.
    pub fn relative(&self, dir: &Path) -> String {
        match &self.local_root {
            Some(root) => dir.strip_prefix(root).unwrap_or(dir).display().to_string(),
            None => dir.display().to_string(),
        }
    }

    /// How long a tool reading this copy's files where they are (par2, dar) may read
    /// nothing before it is stopped; None for a remote copy, whose files are downloaded
    /// first.
    pub fn tool_stall(&self) -> Option<std::time::Duration> {
        self.local_root.as_ref().map(|_| self.stall)
    }

    /// The name of the copy's own folder (a copy that is one set's folder is named by it).
    pub fn folder_name(&self) -> Option<String> {
        let root = self.local_root.as_ref()?;
        Some(root.file_name()?.to_string_lossy().into_owned())
    }

    /// Whether two handles are the same local folder (the repository named by its path).
    pub fn same_folder(&self, other: &Store) -> bool {
        self.local_root.is_some() && self.local_root == other.local_root
    }

    /// Whether `path` (absolute, on this machine) lies inside this local copy.
    pub fn holds(&self, path: &Path) -> bool {
        self.local_root
            .as_ref()
            .is_some_and(|root| path.starts_with(root))
    }

    /// Bytes an unprivileged user may still write here (local copies only).
    pub fn free_bytes(&self) -> Result<Option<u64>> {
        use std::os::unix::ffi::OsStrExt;
        let Some(root) = &self.local_root else {
            return Ok(None);
        };
        let Ok(c) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
            return Ok(None);
        };
        self.on_disk("cannot ask for free space", move || {
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
            (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then(|| s.f_bavail * s.f_frsize)
        })
    }

    /// Put the file at `path` at `target` to be read there: a hard link (else a copy) of a
    /// local copy's file, a download from a remote one. A symbolic link is never followed:
    /// the target then stays missing.
    pub async fn fetch(&self, path: &str, target: &Path) -> Result<()> {
        if self.is_link(path)? {
            return Ok(());
        }
        match &self.local_root {
            Some(root) => {
                let (source, target) = (root.join(path), target.to_owned());
                self.blocking(&format!("cannot read {path}"), move |copied| {
                    let regular = std::fs::symlink_metadata(&source).is_ok_and(|m| m.is_file());
                    if regular && std::fs::hard_link(&source, &target).is_err() {
                        copy_counted(&source, &target, copied)
                            .map_err(Error::io("cannot copy", &source))?;
                    }
                    Ok(())
                })
                .await?
            }
            None => self.download(path, target).await.map(|_| ()),
        }
    }

    /// A file on this machine that may lie on this copy's disk (in place, or in a scratch
    /// folder inside it), read whole under the copy's stall deadline.
    pub async fn read_here(&self, path: &Path) -> Result<Vec<u8>> {
        let path = path.to_owned();
        self.blocking(&format!("cannot read {}", path.display()), move |_| {
            let mut file =
                super::store::open_regular(&path).map_err(Error::io("cannot open", &path))?;
            let mut bytes = Vec::new();
            let read = std::io::Read::read_to_end(&mut file, &mut bytes);
            super::disk::close(file);
            read.map(|_| bytes).map_err(Error::io("cannot read", &path))
        })
        .await?
    }

    /// The same, hashed in one streaming read: size and SHA-256.
    pub async fn hash_here(&self, path: &Path) -> Result<(u64, String)> {
        let path = path.to_owned();
        self.blocking(&format!("cannot read {}", path.display()), move |read| {
            super::store::hash_unlinked(&path, read)?
                .ok_or_else(|| Error::Failed(format!("{} is missing", path.display())))
        })
        .await?
    }

    /// A scratch folder for work on this copy's files: inside a local copy's
    /// `.darvault/scratch` (the same filesystem, so files are hard-linked, not copied;
    /// left-overs of a killed run are removed by `clear_scratch`), else in the temporary folder.
    pub fn scratch(&self, purpose: &str) -> Result<Scratch> {
        let failed = |e| Error::Failed(format!("cannot make a scratch directory: {e}"));
        let dir = match &self.local_root {
            Some(root) => {
                let (dir, prefix) = (root.join(SCRATCH), format!("{purpose}."));
                self.on_disk("cannot make a scratch directory", move || {
                    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
                    tempfile::Builder::new()
                        .prefix(&prefix)
                        .tempdir_in(&dir)
                        .map_err(failed)
                })??
            }
            None => tempfile::Builder::new()
                .prefix(&format!("darvault-{purpose}."))
                .tempdir()
                .map_err(failed)?,
        };
        Ok(Scratch {
            dir: Some(dir),
            stall: self.stall,
        })
    }

    /// Remove the scratch folders runs that were killed left in a local copy. Only a run
    /// holding the copy's writer lock may call this.
    pub fn clear_scratch(&self) -> Result<()> {
        match &self.local_root {
            Some(root) => {
                let dir = root.join(SCRATCH);
                super::disk::while_moving(self.stall, move |removed| {
                    let _ = super::disk::remove_all(&dir, removed);
                })
                .ok_or_else(|| self.stalled("cannot clear the scratch folder"))
            }
            None => Ok(()),
        }
    }

    /// Remove a symbolic link found where a file is about to be written (the link itself,
    /// whatever it points at). Remote copies hold no links.
    pub fn remove_link(&self, path: &str) -> Result<()> {
        if let (true, Some(root)) = (self.is_link(path)?, &self.local_root) {
            let link = root.join(path);
            self.on_disk("cannot remove a link", move || {
                std::fs::remove_file(&link).map_err(Error::io("cannot remove the link", &link))
            })??;
        }
        Ok(())
    }

    /// Whether another run holds the writer lock of a local copy (false for a remote one).
    pub fn lock_held(&self) -> bool {
        let Some(root) = self.local_root.clone() else {
            return false;
        };
        self.on_disk("cannot look at the lock", move || {
            crate::lock::held(&crate::lock::repository_lock(&root))
        })
        .unwrap_or(false)
    }

    /// Every lock that says a run writes to this copy, taken in turn: a configured
    /// destination's in the state folder, and a local copy's own in its root, which every
    /// state folder sees (another config, `sudo`, a second darvault on the machine the disk
    /// is plugged into).
    pub fn writer_locks(
        &self,
        config: Option<&crate::config::Config>,
    ) -> Result<Vec<crate::lock::Lock>> {
        let mut locks = Vec::new();
        if let Some(c) = config.filter(|c| c.destination(&self.name).is_some()) {
            locks.push(crate::lock::lock_destination(c, &self.name)?);
        }
        locks.extend(self.lock_folder()?);
        Ok(locks)
    }

    /// The writer lock of a local copy that is not a configured destination (an audit of a
    /// folder named by its path); `None` for a remote one.
    pub fn lock_folder(&self) -> Result<Option<crate::lock::Lock>> {
        match &self.local_root {
            Some(root) => {
                let root = root.clone();
                // The wait for a lock another run holds (--lock-wait) is not a stall.
                super::disk::bounded(self.stall + crate::lock::wait(), move || {
                    crate::lock::lock_repository(&root)
                        .map(|lock| Some(lock.closed_by(super::disk::close)))
                })
                .ok_or_else(|| self.stalled("cannot take the lock"))?
            }
            None => Ok(None),
        }
    }
}

/// A scratch folder for work on a copy's files (see `Store::scratch`), removed when dropped
/// without waiting longer than the copy's stall deadline for its disk.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    stall: std::time::Duration,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("until dropped").path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let dir = dir.keep();
            super::disk::while_moving(self.stall, move |removed| {
                let _ = super::disk::remove_all(&dir, removed);
            });
        }
    }
}

/// Copy `from` to `to` (a new file), counting the bytes in `copied`.
fn copy_counted(
    from: &Path,
    to: &Path,
    copied: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut input = super::store::open_regular(from)?;
    let output = std::fs::File::create_new(to);
    let copied = output.and_then(|mut output| {
        let mut buffer = vec![0u8; 1 << 20];
        let done = loop {
            match input.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = output.write_all(&buffer[..n]) {
                        break Err(e);
                    }
                    copied.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => break Err(e),
            }
        };
        super::disk::close(output);
        done
    });
    super::disk::close(input);
    copied
}
