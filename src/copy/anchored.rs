//! Writing into a local copy through a descriptor of its root folder, opened once: every
//! folder and file is created relative to it (`mkdirat`, `openat`) and never through a
//! symbolic link (`O_NOFOLLOW` at each step). When the disk is unmounted mid-run, the
//! descriptor still names the disk (or fails), while the path would now name the folder on
//! the system disk underneath: nothing can land there, whatever the timing.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Anchored {
    /// The copy's root, or its nearest existing ancestor (a root not created yet).
    root: std::sync::Arc<OwnedFd>,
    /// From there to the copy's root ("" when the root exists).
    prefix: String,
    label: String,
}

impl Anchored {
    /// Anchor at `root`, or at its nearest existing ancestor when it does not exist yet.
    pub fn at(root: &Path) -> Result<Anchored> {
        let existing = root
            .ancestors()
            .find(|p| p.is_dir())
            .unwrap_or(Path::new("/"));
        let mut anchored = Anchored::open(existing)?;
        anchored.prefix = root
            .strip_prefix(existing)
            .unwrap_or(Path::new(""))
            .to_string_lossy()
            .into_owned();
        anchored.label = root.display().to_string();
        Ok(anchored)
    }

    fn under(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.trim_start_matches('/')) {
            (true, rel) => rel.to_owned(),
            (false, "") => self.prefix.clone(),
            (false, rel) => format!("{}/{rel}", self.prefix),
        }
    }

    fn open(root: &Path) -> Result<Anchored> {
        let c = CString::new(root.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Failed(format!("{} is not a usable path", root.display())))?;
        // SAFETY: a plain open(2) of a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::io("cannot open", root)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Anchored {
            // SAFETY: fd was just opened and is owned by nothing else.
            root: std::sync::Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            prefix: String::new(),
            label: root.display().to_string(),
        })
    }

    /// The folder `rel` (and every folder on the way), created where missing; refuses any
    /// step that is a symbolic link.
    pub fn folder(&self, rel: &str) -> Result<OwnedFd> {
        let mut dir = self.root.try_clone().map_err(|e| self.failed(rel, e))?;
        for part in self.under(rel).split('/').filter(|p| !p.is_empty()) {
            let name = self.c_name(rel, part)?;
            // SAFETY: mkdirat/openat with a valid directory descriptor and a NUL-terminated
            // single path component.
            unsafe {
                if libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) == -1 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(self.failed(rel, e));
                    }
                }
                let next = libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                );
                if next < 0 {
                    return Err(self.failed(rel, std::io::Error::last_os_error()));
                }
                dir = OwnedFd::from_raw_fd(next);
            }
        }
        Ok(dir)
    }

    /// Create the regular file `rel` anew for writing (whatever was there under that name,
    /// a link included, is removed first, never written through: a hard link planted in a
    /// copy cannot carry the write elsewhere either).
    pub fn create(&self, rel: &str, mode: libc::mode_t) -> Result<File> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = self.folder(parent)?;
        let name = self.c_name(rel, name)?;
        // SAFETY: unlinkat/openat with a valid directory descriptor and a single
        // NUL-terminated name.
        let fd = unsafe {
            libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0);
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(self.failed(rel, std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Move `from` onto `to` (both in the same folder), replacing it atomically.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (parent, from_name) = from.rsplit_once('/').unwrap_or(("", from));
        let (to_parent, to_name) = to.rsplit_once('/').unwrap_or(("", to));
        if parent != to_parent {
            return Err(Error::Failed(format!(
                "{from} and {to} are not in one folder"
            )));
        }
        let dir = self.folder_if_there(parent)?;
        let (a, b) = (self.c_name(from, from_name)?, self.c_name(to, to_name)?);
        // SAFETY: renameat within one valid directory descriptor, single names.
        let rc =
            unsafe { libc::renameat(dir.as_raw_fd(), a.as_ptr(), dir.as_raw_fd(), b.as_ptr()) };
        if rc == -1 {
            return Err(self.failed(to, std::io::Error::last_os_error()));
        }
        // The rename is durable once the folder is.
        // SAFETY: fsync of a valid descriptor.
        unsafe { libc::fsync(dir.as_raw_fd()) };
        Ok(())
    }

    /// Remove the file `rel` if it is there (a link is removed, not followed).
    pub fn remove(&self, rel: &str) {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let (Ok(dir), Ok(name)) = (self.folder_if_there(parent), self.c_name(rel, name)) else {
            return;
        };
        // SAFETY: unlinkat with a valid directory descriptor and a single name.
        unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    }

    fn folder_if_there(&self, rel: &str) -> Result<OwnedFd> {
        let mut dir = self.root.try_clone().map_err(|e| self.failed(rel, e))?;
        for part in self.under(rel).split('/').filter(|p| !p.is_empty()) {
            let name = self.c_name(rel, part)?;
            // SAFETY: as in `folder`.
            let next = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if next < 0 {
                return Err(self.failed(rel, std::io::Error::last_os_error()));
            }
            // SAFETY: just opened.
            dir = unsafe { OwnedFd::from_raw_fd(next) };
        }
        Ok(dir)
    }

    fn c_name(&self, rel: &str, part: &str) -> Result<CString> {
        if part == "." || part == ".." {
            return Err(Error::Failed(format!(
                "{rel}: refusing a path with {part:?}"
            )));
        }
        CString::new(part).map_err(|_| Error::Failed(format!("{rel}: not a usable name")))
    }

    fn failed(&self, rel: &str, e: std::io::Error) -> Error {
        let cause = match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                "a symbolic link (or a file) stands on the way: refusing to write through it"
                    .to_owned()
            }
            _ => match super::failure::os_cause(&e) {
                Some((_, cause)) => cause,
                None => e.to_string(),
            },
        };
        let retry = matches!(
            super::failure::os_cause(&e),
            Some((super::failure::Retry::Helps, _))
        );
        Error::Storage {
            what: format!("cannot write {rel} in {}", self.label),
            cause,
            retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_inside_and_never_follow_links() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let a = Anchored::at(root.path()).unwrap();
        std::io::Write::write_all(&mut a.create("d/e/f.txt", 0o644).unwrap(), b"x").unwrap();
        assert_eq!(std::fs::read(root.path().join("d/e/f.txt")).unwrap(), b"x");
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let err = a.create("link/f.txt", 0o644).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::os::unix::fs::symlink(outside.path().join("t"), root.path().join("file-link"))
            .unwrap();
        // A link in the file's place is replaced by a real file, never written through.
        std::io::Write::write_all(&mut a.create("file-link", 0o644).unwrap(), b"y").unwrap();
        assert!(!outside.path().join("t").exists());
        assert!(
            std::fs::symlink_metadata(root.path().join("file-link"))
                .unwrap()
                .is_file()
        );
        assert!(a.create("../escape", 0o644).is_err());
    }
}
