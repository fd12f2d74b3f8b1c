//! Sets are built in a hidden staging directory beside where they will live, and renamed into
//! place only when everything in them is written, synced and checked. A crash, kill -9 or full
//! disk at any moment leaves only a `.staging.*` directory, which is never taken for a set and
//! is removed by the next run that holds the repository lock.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const PREFIX: &str = ".staging.";

pub struct Staging {
    dir: PathBuf,
    target: PathBuf,
    published: bool,
}

impl Staging {
    /// Create `<parent>/.staging.<name>`; the set will be published as `<parent>/<name>`.
    pub fn create(parent: &Path, name: &str) -> Result<Staging> {
        std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        let dir = parent.join(format!("{PREFIX}{name}"));
        let target = parent.join(name);
        if target.exists() {
            return Err(Error::Failed(format!(
                "{} exists already",
                target.display()
            )));
        }
        std::fs::create_dir(&dir).map_err(Error::io("cannot create", &dir))?;
        Ok(Staging {
            dir,
            target,
            published: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A scratch directory beside the staging one, removed with it (and by stale cleanup).
    pub fn scratch(&self, purpose: &str) -> Result<PathBuf> {
        let name = self.dir.file_name().expect("has a name").to_string_lossy();
        let p = self.dir.with_file_name(format!("{name}.{purpose}"));
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(Error::io("cannot remove", &p))?;
        }
        std::fs::create_dir(&p).map_err(Error::io("cannot create", &p))?;
        Ok(p)
    }

    /// Sync every file and directory, then rename into place and sync the parent, so that the
    /// published name never points at data still in flight.
    pub fn publish(mut self) -> Result<PathBuf> {
        for entry in walkdir::WalkDir::new(&self.dir).contents_first(true) {
            let entry = entry.map_err(|e| Error::Failed(format!("cannot walk staging: {e}")))?;
            sync_path(entry.path())?;
        }
        std::fs::rename(&self.dir, &self.target)
            .map_err(Error::io("cannot publish", &self.target))?;
        sync_path(self.target.parent().expect("has a parent"))?;
        self.published = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            remove_with_scratch(&self.dir);
        }
    }
}

fn remove_with_scratch(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
        let scratch_prefix = format!("{}.", name.to_string_lossy());
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&scratch_prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// Start writing a finished file of a set to disk now, without waiting for it, so that the
/// fsync before publication finds little left to write. dar leaves gigabytes in the page cache
/// (the kernel starts writing back only at 10% of memory or after 30 s), and that write-out
/// would otherwise all happen after the checks. Only a head start: failure is harmless, the
/// fsync at publication is what makes the file durable.
pub fn start_writeback(p: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(p) {
        // SAFETY: a valid descriptor owned by `f`; offset 0 and length 0 mean the whole file.
        unsafe {
            libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
}

fn sync_path(p: &Path) -> Result<()> {
    // Directories and files can both be opened read-only and fsync'ed on Linux.
    let f = std::fs::File::open(p).map_err(Error::io("cannot open", p))?;
    f.sync_all().map_err(Error::io("cannot sync", p))
}

/// Remove staging leftovers of interrupted runs in `parent`. Call only while holding the
/// repository lock: then no other run can be writing them.
pub fn clean_stale(parent: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io("cannot read", parent)(e)),
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(PREFIX) {
            std::fs::remove_dir_all(e.path()).map_err(Error::io("cannot remove", &e.path()))?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

pub fn is_staging(name: &str) -> bool {
    name.starts_with(PREFIX)
}
