//! Proof that the files of a set in staging are still the bytes that were hashed.
//!
//! dar does return to slices it has finished: when compressing a file did not shrink it, it
//! truncates an earlier slice, deletes the later ones and writes them again (seen with
//! strace). A hash taken while dar runs is therefore only provisional. Each file is *sealed*
//! when it is hashed: the kernel's change notifications (inotify) for the staging directory
//! are read up to that moment, and the file's identity, size and times are noted. Any later
//! write, truncation, deletion, rename or close after writing reported for that name (or a
//! different identity, size, mtime or ctime when looked at again) breaks the seal. Writes
//! through a memory mapping are the one thing inotify does not report; they still move the
//! file's mtime and ctime, which the second check compares. A lost notification (queue
//! overflow) breaks every seal.
//!
//! Backup reads the broken seals once dar has exited and redoes that work; the last gate
//! before publication (`prove`) refuses a set with any broken seal, any file its manifest
//! does not list, or any listed file not sealed with the manifest's size and SHA-256.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::manifest::{FileEntry, PartDigests};
use super::{MANIFEST, Role, SHA256SUMS};
use crate::error::{Error, Result};
use crate::hashing::hash_file;

/// A file's size, SHA-256, and its parts' digests where it is large enough to go to an S3
/// copy in parts (the sizes are known before the read: one read gives both).
type Hashed = (u64, String, Option<PartDigests>);

fn hash_sealed(path: &Path, size: u64) -> Result<Hashed> {
    let part = super::manifest::parts_for(size);
    let (size, sha256, digests) = crate::cpu::on_this_thread(crate::cpu::HASHING, || {
        crate::hashing::hash_file_parts(path, part)
    })?;
    // The file may have grown or shrunk since its size was taken: its seal says so, and
    // parts that do not cut it are not recorded.
    let parts = part
        .map(|size| PartDigests {
            size,
            sha256: digests,
        })
        .filter(|p| p.fit(size));
    Ok((size, sha256, parts))
}

/// Everything that can change a file's bytes or what its name points at.
fn changes() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(path: &Path) -> Result<Fingerprint> {
        let m = std::fs::symlink_metadata(path).map_err(Error::io("cannot read", path))?;
        if !m.file_type().is_file() {
            return Err(Error::Failed(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(Fingerprint {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

struct Seal {
    entry: FileEntry,
    fingerprint: Fingerprint,
    broken: bool,
}

/// The seals of one staging directory (and its sub-directories that were added).
pub struct Seals {
    root: PathBuf,
    /// None when the kernel refused a watch (the per-user inotify limit): then nothing is
    /// hashed while dar runs, and the last gate hashes every file again.
    inotify: Option<Inotify>,
    /// Watched directory → its path relative to the root ("" or "bundle/").
    dirs: HashMap<WatchDescriptor, String>,
    seals: BTreeMap<String, Seal>,
    /// Notifications were lost: no seal can be trusted.
    overflowed: bool,
    buffer: Vec<u8>,
}

impl Seals {
    /// Start watching `root` (before anything is written into it).
    pub fn watch(root: &Path) -> Result<Seals> {
        let mut seals = Seals {
            root: root.to_owned(),
            inotify: Inotify::init().ok(),
            dirs: HashMap::new(),
            seals: BTreeMap::new(),
            overflowed: false,
            buffer: vec![0u8; 64 * 1024],
        };
        seals.watch_dir("")?;
        if seals.inotify.is_none() {
            tracing::warn!(
                "cannot watch {} for changes (inotify): slices are hashed after dar ends, and once more before publishing",
                root.display()
            );
        }
        Ok(seals)
    }

    /// Whether changes are watched (else nothing should be hashed while dar runs).
    pub fn watching(&self) -> bool {
        self.inotify.is_some()
    }

    /// Also watch the sub-directory `rel` (create it first; seal nothing in it before this).
    pub fn watch_dir(&mut self, rel: &str) -> Result<()> {
        let dir = self.root.join(rel);
        let Some(inotify) = &mut self.inotify else {
            return Ok(());
        };
        let added = inotify.watches().add(
            &dir,
            changes() | WatchMask::ONLYDIR | WatchMask::DONT_FOLLOW,
        );
        let wd = match added {
            Ok(wd) => wd,
            Err(e) => {
                tracing::warn!("cannot watch {} for changes: {e}", dir.display());
                self.inotify = None;
                return Ok(());
            }
        };
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{}/", rel.trim_end_matches('/'))
        };
        self.dirs.insert(wd, prefix);
        Ok(())
    }

    /// Read the notifications queued so far; each one breaks the seal of the name it reports.
    fn drain(&mut self) -> Result<()> {
        let Some(inotify) = &mut self.inotify else {
            return Ok(());
        };
        loop {
            let events = match inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(Error::Failed(format!("cannot read notifications: {e}"))),
            };
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    self.overflowed = true;
                    continue;
                }
                let (Some(prefix), Some(name)) = (self.dirs.get(&event.wd), event.name) else {
                    continue;
                };
                let rel = format!("{prefix}{}", name.to_string_lossy());
                if let Some(seal) = self.seals.get_mut(&rel) {
                    seal.broken = true;
                }
            }
            if !any {
                return Ok(());
            }
        }
    }

    /// Hash `rel` and seal it. A file that changed while it was read is sealed broken.
    pub fn hash(&mut self, rel: &str, role: Role) -> Result<FileEntry> {
        self.drain()?;
        let before = self.begin(rel, role)?;
        let hashed = hash_sealed(&self.root.join(rel), before.size);
        self.end(rel, before, hashed)
    }

    /// Hash and seal `files` while `beside` runs on another thread, given their sizes: work
    /// that must read exactly the bytes hashed (par2 making their recovery data) goes there.
    /// The seals start before either reads, so a change while they read breaks them as a
    /// change afterwards does. Without change notifications nothing could prove that, and
    /// `beside` runs after the hashing instead.
    pub fn hash_beside<T: Send>(
        &mut self,
        files: &[(String, Role)],
        beside: impl FnOnce(&[u64]) -> T + Send,
    ) -> Result<(Vec<FileEntry>, T)> {
        self.drain()?;
        let mut befores = Vec::with_capacity(files.len());
        for (rel, role) in files {
            befores.push(self.begin(rel, *role)?);
        }
        let sizes: Vec<u64> = befores.iter().map(|b| b.size).collect();
        let root = &self.root;
        let hash_all = || -> Vec<Result<Hashed>> {
            files
                .iter()
                .zip(&sizes)
                .map(|((rel, _), size)| hash_sealed(&root.join(rel), *size))
                .collect()
        };
        let (hashed, besides) = if self.watching() {
            std::thread::scope(|scope| {
                let other = scope.spawn(|| beside(&sizes));
                let hashed = hash_all();
                (hashed, other.join().expect("work beside the hashing"))
            })
        } else {
            let hashed = hash_all();
            (hashed, beside(&sizes))
        };
        let mut entries = Vec::with_capacity(files.len());
        for (((rel, _), before), hashed) in files.iter().zip(befores).zip(hashed) {
            entries.push(self.end(rel, before, hashed)?);
        }
        Ok((entries, besides))
    }

    /// Start the seal of `rel` (call `drain` first): from here on a notification for it
    /// breaks it. Until `end`, it seals no hash, so the last gate refuses it.
    fn begin(&mut self, rel: &str, role: Role) -> Result<Fingerprint> {
        let before = Fingerprint::of(&self.root.join(rel))?;
        let entry = FileEntry {
            path: rel.to_owned(),
            size: before.size,
            sha256: String::new(),
            role,
            parts: None,
        };
        // The old seal of this name (if any) stops counting from here.
        self.seals.insert(
            rel.to_owned(),
            Seal {
                entry,
                fingerprint: before.clone(),
                broken: false,
            },
        );
        Ok(before)
    }

    /// Complete the seal `begin` started with what hashing `rel` found. A file that is not
    /// what it was at `begin` (identity, size, times) is sealed broken.
    fn end(&mut self, rel: &str, before: Fingerprint, hashed: Result<Hashed>) -> Result<FileEntry> {
        let (size, sha256, parts) = match hashed {
            Ok(h) => h,
            Err(e) => {
                self.seals.remove(rel);
                return Err(e);
            }
        };
        let after = Fingerprint::of(&self.root.join(rel))?;
        let seal = self.seals.get_mut(rel).expect("begun");
        seal.entry.size = size;
        seal.entry.sha256 = sha256;
        seal.entry.parts = parts;
        seal.broken |= before != after || size != after.size;
        Ok(seal.entry.clone())
    }

    /// Forget the seal of `rel` (its work is being redone).
    pub fn forget(&mut self, rel: &str) {
        self.seals.remove(rel);
    }

    /// The sealed names whose seal is broken now, in order.
    pub fn broken(&mut self) -> Result<Vec<String>> {
        self.drain()?;
        // A lost notification breaks the seals taken before it; the work redone after this
        // call is sealed anew.
        let overflowed = std::mem::take(&mut self.overflowed);
        let mut out = Vec::new();
        for (rel, seal) in &mut self.seals {
            let same = Fingerprint::of(&self.root.join(rel))
                .map(|f| f == seal.fingerprint)
                .unwrap_or(false);
            if overflowed || seal.broken || !same {
                seal.broken = true;
                out.push(rel.clone());
            }
        }
        Ok(out)
    }

    /// The last gate before publication: the staging directory holds exactly the files of
    /// `files` plus MANIFEST.toml and SHA256SUMS, each sealed with the recorded size and
    /// SHA-256 (MANIFEST.toml and SHA256SUMS are sealed here), and no seal is broken.
    pub fn prove(&mut self, files: &[FileEntry]) -> Result<()> {
        for rel in [MANIFEST, SHA256SUMS] {
            if !self.seals.contains_key(rel) {
                self.hash(rel, Role::Bundle)?;
            }
        }
        let fail = |what: String| -> Result<()> {
            Err(Error::Failed(format!(
                "the set was not published: {what} (the staging directory is removed)"
            )))
        };
        if let Some(rel) = self.broken()?.first() {
            return fail(format!("{rel} changed after it was hashed"));
        }
        if !self.watching() {
            // No notifications to prove it: every file is read once more.
            for f in files {
                let (size, sha) = hash_file(&self.root.join(&f.path))?;
                if size != f.size || sha != f.sha256 {
                    return fail(format!("{} changed after it was hashed", f.path));
                }
            }
        }
        let mut expected: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        expected.extend([MANIFEST, SHA256SUMS]);
        for f in files {
            match self.seals.get(&f.path) {
                Some(s) if s.entry.size == f.size && s.entry.sha256 == f.sha256 => {}
                Some(_) => return fail(format!("{} does not match its manifest entry", f.path)),
                None => return fail(format!("{} was never hashed on disk", f.path)),
            }
        }
        for rel in self.on_disk()? {
            if !expected.contains(rel.as_str()) {
                return fail(format!("{rel} is in the set but not in its manifest"));
            }
        }
        Ok(())
    }

    /// Every non-directory under the root, relative, '/'-separated. Anything that is not a
    /// regular file or a directory is an error.
    fn on_disk(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(&self.root).min_depth(1) {
            let e = e.map_err(|e| Error::Failed(format!("cannot walk staging: {e}")))?;
            let rel = e
                .path()
                .strip_prefix(&self.root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned();
            let kind = e.file_type();
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                return Err(Error::Failed(format!(
                    "the set was not published: {rel} is not a regular file"
                )));
            }
            out.push(rel);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    fn setup() -> (tempfile::TempDir, Seals) {
        let dir = tempfile::tempdir().unwrap();
        let seals = Seals::watch(dir.path()).unwrap();
        (dir, seals)
    }

    #[test]
    fn a_write_after_hashing_breaks_only_that_seal() {
        let (dir, mut seals) = setup();
        for n in ["a", "b"] {
            std::fs::write(dir.path().join(n), b"first").unwrap();
        }
        seals.hash("a", Role::Slice).unwrap();
        seals.hash("b", Role::Slice).unwrap();
        assert!(seals.broken().unwrap().is_empty());
        // Same size, same second: only the notification can tell.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("a"))
            .unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"F").unwrap();
        drop(f);
        assert_eq!(seals.broken().unwrap(), vec!["a".to_owned()]);
        // Hashing again seals the new bytes.
        seals.hash("a", Role::Slice).unwrap();
        assert!(seals.broken().unwrap().is_empty());
    }

    #[test]
    fn a_write_while_the_work_beside_reads_breaks_the_seal() {
        let (dir, mut seals) = setup();
        for n in ["s.1.dar", "s.catalog.1.dar"] {
            std::fs::write(dir.path().join(n), b"bytes dar wrote").unwrap();
        }
        let files = [
            ("s.1.dar".to_owned(), Role::Slice),
            ("s.catalog.1.dar".to_owned(), Role::Catalogue),
        ];
        let (entries, sizes) = seals
            .hash_beside(&files, |sizes| {
                // Same size, same second: only the notification can tell.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.path().join("s.1.dar"))
                    .unwrap();
                f.write_all(b"B").unwrap();
                sizes.to_vec()
            })
            .unwrap();
        assert_eq!(sizes, vec![15, 15]);
        assert_eq!(entries.len(), 2);
        assert_eq!(seals.broken().unwrap(), vec!["s.1.dar".to_owned()]);
        std::fs::write(dir.path().join(MANIFEST), b"m").unwrap();
        std::fs::write(dir.path().join(SHA256SUMS), b"s").unwrap();
        let err = seals.prove(&entries).unwrap_err();
        assert!(err.to_string().contains("s.1.dar changed"), "{err}");
    }

    #[test]
    fn delete_and_recreate_breaks_the_seal() {
        let (dir, mut seals) = setup();
        std::fs::write(dir.path().join("s.2.dar"), b"old").unwrap();
        seals.hash("s.2.dar", Role::Slice).unwrap();
        std::fs::remove_file(dir.path().join("s.2.dar")).unwrap();
        std::fs::write(dir.path().join("s.2.dar"), b"old").unwrap();
        assert_eq!(seals.broken().unwrap(), vec!["s.2.dar".to_owned()]);
    }

    #[test]
    fn the_gate_refuses_strays_unsealed_and_changed_files() {
        let (dir, mut seals) = setup();
        std::fs::write(dir.path().join("x.1.dar"), b"slice").unwrap();
        let entry = seals.hash("x.1.dar", Role::Slice).unwrap();
        std::fs::write(dir.path().join(MANIFEST), b"m").unwrap();
        std::fs::write(dir.path().join(SHA256SUMS), b"s").unwrap();
        seals.prove(std::slice::from_ref(&entry)).unwrap();

        std::fs::write(dir.path().join("stray.par2"), b"?").unwrap();
        let err = seals.prove(std::slice::from_ref(&entry)).unwrap_err();
        assert!(err.to_string().contains("stray.par2"), "{err}");
        std::fs::remove_file(dir.path().join("stray.par2")).unwrap();

        let mut wrong = entry.clone();
        wrong.sha256 = "0".repeat(64);
        let err = seals.prove(&[wrong]).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        std::fs::write(dir.path().join("x.1.dar"), b"SLICE").unwrap();
        let err = seals.prove(std::slice::from_ref(&entry)).unwrap_err();
        assert!(err.to_string().contains("x.1.dar changed"), "{err}");
    }

    #[test]
    fn files_in_a_watched_subdirectory_are_sealed_too() {
        let (dir, mut seals) = setup();
        std::fs::create_dir(dir.path().join("bundle")).unwrap();
        seals.watch_dir("bundle").unwrap();
        std::fs::write(dir.path().join("bundle/RESTORE.txt"), b"steps").unwrap();
        seals.hash("bundle/RESTORE.txt", Role::Bundle).unwrap();
        std::fs::write(dir.path().join("bundle/RESTORE.txt"), b"other").unwrap();
        assert_eq!(
            seals.broken().unwrap(),
            vec!["bundle/RESTORE.txt".to_owned()]
        );
    }
}
