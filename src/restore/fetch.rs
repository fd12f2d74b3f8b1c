//! Files of a copy made readable for dar, each proven against its manifest entry first.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::copy::{FoundSet, Store};
use crate::error::{Error, Result};
use crate::set::par2_index::BlockSums;

/// The proven slices of one set: their paths and the folder that holds them.
pub(super) struct Proven {
    pub(super) dir: PathBuf,
    pub(super) files: Vec<PathBuf>,
}

/// Files of the copy made readable for dar, each proven against its manifest entry: in
/// place on a local copy, downloaded (and hashed on the way) into the scratch folder else.
pub(super) struct Fetch<'a> {
    pub(super) rt: &'a crate::copy::Runtime,
    pub(super) copy: &'a Store,
    pub(super) scratch: &'a Path,
    pub(super) downloaded: u64,
    /// Where the stand-ins of slices proven by their ends go: in the system's temporary
    /// folder, which holds sparse files (the scratch folder is beside the target, which may
    /// be a FAT disk that would write out every zero).
    pub(super) edges: Option<tempfile::TempDir>,
    /// The block checksums of each PAR2 index read, by set and index (None: unusable).
    pub(super) sums: HashMap<(String, String), Option<Arc<BlockSums>>>,
}

impl<'a> Fetch<'a> {
    pub(super) fn new(rt: &'a crate::copy::Runtime, copy: &'a Store, scratch: &'a Path) -> Self {
        Fetch {
            rt,
            copy,
            scratch,
            downloaded: 0,
            edges: None,
            sums: HashMap::new(),
        }
    }

    /// The checksums of each block of slice `name` of `set`, from the set's PAR2 index that
    /// protects it (proven against the manifest, read once): None when no index protects
    /// it, or the index is damaged or records another length.
    pub(super) fn block_sums(
        &mut self,
        set: &FoundSet,
        name: &str,
    ) -> Result<Option<Arc<BlockSums>>> {
        let (Some(entry), Some(group)) = (
            set.manifest.files.iter().find(|f| f.path == name),
            set.manifest
                .par2
                .iter()
                .find(|g| g.covers.iter().any(|c| c == name)),
        ) else {
            return Ok(None);
        };
        let key = (set.manifest.set.name.clone(), group.index.clone());
        if !self.sums.contains_key(&key) {
            let sums = match self.file(set, &group.index) {
                Ok(index) => {
                    let bytes = self.rt.block_on_stoppable(self.copy.read_here(&index))?;
                    BlockSums::parse(&bytes).ok().map(Arc::new)
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(_) => None,
            };
            self.sums.insert(key.clone(), sums);
        }
        let sums = self.sums[&key].clone();
        Ok(sums.filter(|s| s.length(name) == Some(entry.size)))
    }
    pub(super) fn file(&mut self, set: &FoundSet, path: &str) -> Result<PathBuf> {
        let mut proven = self.files(&[(set, path.to_owned())])?;
        Ok(proven.remove(0))
    }

    /// Several files: on a local copy proven in place side by side, a core each (hashing is
    /// the whole cost of proving a slice there); from a remote copy downloaded side by side.
    pub(super) fn files(&mut self, wanted: &[(&FoundSet, String)]) -> Result<Vec<PathBuf>> {
        let in_place: Option<Vec<PathBuf>> = wanted
            .iter()
            .map(|(set, path)| {
                self.copy
                    .in_place(&format!("{}/{path}", self.copy.location(set)))
            })
            .collect();
        let Some(in_place) = in_place else {
            return self.download_all(wanted);
        };
        let hashes = self.hash_in_place(wanted)?;
        wanted
            .iter()
            .zip(in_place)
            .zip(hashes)
            .map(|(((set, path), local), got)| self.proven(set, path, local, got))
            .collect()
    }

    /// Size and SHA-256 of files of a local copy where they are, a core each (hashing is the
    /// whole cost there), under the copy's stall deadline; None for a file missing,
    /// unreadable or a link.
    pub(super) fn hash_in_place(
        &self,
        wanted: &[(&FoundSet, String)],
    ) -> Result<Vec<Option<(u64, String)>>> {
        use futures_util::StreamExt;
        let copy = self.copy;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stored: Vec<String> = wanted
            .iter()
            .map(|(set, path)| format!("{}/{path}", copy.location(set)))
            .collect();
        let hashed: Vec<Result<Option<(u64, String)>>> = self.rt.block_on_stoppable(async {
            Ok(futures_util::stream::iter(stored.iter())
                .map(|path| copy.hash(path))
                .buffered(cores)
                .collect()
                .await)
        })?;
        hashed
            .into_iter()
            .map(|got| match got {
                Ok(got) => Ok(got),
                Err(e @ (Error::Stalled { .. } | Error::Interrupted)) => Err(e),
                Err(_) => Ok(None),
            })
            .collect()
    }

    /// Files of a remote copy into the scratch folder, as many at once as the copy reads
    /// (its `readers`), each hashed on the way.
    pub(super) fn download_all(&mut self, wanted: &[(&FoundSet, String)]) -> Result<Vec<PathBuf>> {
        use futures_util::StreamExt;
        let mut targets = Vec::new();
        for (set, path) in wanted {
            let local = self.scratch.join(&set.manifest.set.name).join(path);
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
            }
            targets.push((format!("{}/{path}", self.copy.location(set)), local));
        }
        let copy = self.copy;
        let got: Vec<Result<Option<(u64, String)>>> = self.rt.block_on_stoppable(async {
            Ok(futures_util::stream::iter(targets.iter())
                .map(|(stored, local)| copy.download(stored, local))
                .buffered(copy.readers)
                .collect()
                .await)
        })?;
        let mut proven = Vec::new();
        for (((set, path), (stored, local)), got) in wanted.iter().zip(targets).zip(got) {
            let got = got?;
            self.downloaded += got.as_ref().map_or(0, |(size, _)| *size);
            match self.proven(set, path, local.clone(), got) {
                Ok(local) => proven.push(local),
                Err(e) => match self.older(set, path, &stored, &local)? {
                    Some(local) => proven.push(local),
                    None => return Err(e),
                },
            }
        }
        Ok(proven)
    }

    /// A file whose current version on the copy is damaged or deleted, read from the newest
    /// older version the copy keeps with the manifest's size and SHA-256, and proven; None
    /// where it keeps none. The copy itself is left as it is (an audit repairs it).
    fn older(
        &mut self,
        set: &FoundSet,
        path: &str,
        stored: &str,
        local: &Path,
    ) -> Result<Option<PathBuf>> {
        let Some(entry) = set.manifest.files.iter().find(|f| f.path == path) else {
            return Ok(None);
        };
        let copy = self.copy;
        let got = self
            .rt
            .block_on_stoppable(copy.download_older(stored, entry, local));
        let got = match got {
            Ok(Some(got)) => got,
            Ok(None) => return Ok(None),
            Err(e @ (Error::Interrupted | Error::Stalled { .. })) => return Err(e),
            // The damage is what the caller reports; the history was a second chance.
            Err(e) => {
                tracing::warn!("{path}: an older version could not be read: {e}");
                return Ok(None);
            }
        };
        self.downloaded += got.0;
        let local = self.proven(set, path, local.to_path_buf(), Some(got))?;
        tracing::warn!(
            "{path} of {} on {}: the current version is damaged or deleted; read from an older version the copy keeps (repair the copy: darvault audit {} --repair)",
            set.manifest.set.name,
            copy.name,
            copy.name
        );
        Ok(Some(local))
    }

    /// `local` when what was read there (`got`: size and SHA-256) is what the manifest says.
    pub(super) fn proven(
        &self,
        set: &FoundSet,
        path: &str,
        local: PathBuf,
        got: Option<(u64, String)>,
    ) -> Result<PathBuf> {
        let entry = set.manifest.files.iter().find(|f| f.path == path);
        match (entry, got) {
            (Some(f), Some((size, sha))) if size == f.size && sha == f.sha256 => Ok(local),
            _ => Err(Error::Failed(format!(
                "{} on {} is damaged or missing ({path}): repair it with `darvault audit {} --repair`, or restore --from another copy",
                set.manifest.set.name, self.copy.name, self.copy.name
            ))),
        }
    }

    /// The given slices of each set, proven (all of them side by side).
    pub(super) fn slices<'s>(
        &mut self,
        chain: &[FoundSet],
        wanted: impl Iterator<Item = (usize, &'s BTreeSet<u32>)>,
    ) -> Result<Vec<Proven>> {
        let wanted: Vec<(usize, Vec<String>)> = wanted
            .map(|(i, slices)| {
                let base = &chain[i].manifest.archive.basename;
                (
                    i,
                    slices.iter().map(|n| format!("{base}.{n}.dar")).collect(),
                )
            })
            .collect();
        let flat: Vec<(&FoundSet, String)> = wanted
            .iter()
            .flat_map(|(i, names)| names.iter().map(|n| (&chain[*i], n.clone())))
            .collect();
        let mut proven = self.files(&flat)?.into_iter();
        Ok(wanted
            .iter()
            .map(|(i, names)| {
                let files: Vec<PathBuf> = proven.by_ref().take(names.len()).collect();
                let dir = match files.first().and_then(|f| f.parent()) {
                    Some(dir) => dir.to_owned(),
                    None => self.scratch.join(&chain[*i].manifest.set.name),
                };
                Proven { dir, files }
            })
            .collect())
    }

    /// Slice `n` of `set` as dar reads it when it needs only its header and trailer: a file
    /// of the slice's size in a temporary folder holding the slice's first and last 64 KiB
    /// (whole PAR2 blocks), each block proven by the set's PAR2 index (itself proven by the
    /// manifest), and zeros elsewhere: were dar to read more, it would find zeros, never
    /// unproven bytes. None when no PAR2 index protects the slice or a block is not as it
    /// recorded: then the slice is proven whole.
    pub(super) fn edge(&mut self, set: &FoundSet, n: u32) -> Result<Option<PathBuf>> {
        use std::os::unix::fs::FileExt;
        const EDGE: u64 = 64 * 1024;
        let name = format!("{}.{n}.dar", set.manifest.archive.basename);
        let Some(sums) = self.block_sums(set, &name)? else {
            return Ok(None);
        };
        let size = sums.length(&name).expect("the slice's own length");
        let dir = self.edges_of(set)?;
        let proxy = dir.join(&name);
        let file = std::fs::File::create(&proxy).map_err(Error::io("cannot create", &proxy))?;
        file.set_len(size)
            .map_err(Error::io("cannot write", &proxy))?;
        let stored = format!("{}/{name}", self.copy.location(set));
        for wanted in [0..EDGE.min(size), size.saturating_sub(EDGE)..size] {
            let Some(range) = sums.blocks_covering(&name, wanted) else {
                return Ok(None);
            };
            let read = match self
                .rt
                .block_on_stoppable(self.copy.read_range(&stored, range.clone()))
            {
                Ok(read) => read,
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                // Unreadable here: proven whole (or refused) with the slices.
                Err(_) => None,
            };
            let whole_blocks = |b: &Vec<u8>| b.len() as u64 == range.end - range.start;
            let Some(bytes) =
                read.filter(|b| whole_blocks(b) && sums.proves(&name, range.start, b))
            else {
                return Ok(None);
            };
            if self.copy.in_place(&stored).is_none() {
                self.downloaded += bytes.len() as u64;
            }
            file.write_all_at(&bytes, range.start)
                .map_err(Error::io("cannot write", &proxy))?;
        }
        Ok(Some(proxy))
    }

    /// Of `slices` (of `set`), those in `edges` that their ends alone can stand in for
    /// (see `edge`): the slices to prove whole, and the stand-ins made.
    pub(super) fn stand_ins(
        &mut self,
        set: &FoundSet,
        slices: &BTreeSet<u32>,
        edges: &BTreeSet<u32>,
    ) -> Result<(BTreeSet<u32>, Vec<PathBuf>)> {
        let mut whole = slices.clone();
        let mut made = Vec::new();
        for &n in edges {
            match self.edge(set, n)? {
                Some(proxy) => made.push(proxy),
                None => {
                    whole.insert(n);
                }
            }
        }
        Ok((whole, made))
    }

    /// The folder of `set`'s slice edges, with links to its proven whole slices beside them:
    /// one folder holding every slice dar opens.
    pub(super) fn beside_edges(&mut self, set: &FoundSet, whole: &[PathBuf]) -> Result<PathBuf> {
        let dir = self.edges_of(set)?;
        for file in whole {
            let (Some(name), Ok(target)) = (file.file_name(), std::path::absolute(file)) else {
                continue;
            };
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).map_err(Error::io("cannot link", &link))?;
        }
        Ok(dir)
    }

    /// The folder of `set`'s stand-ins.
    pub(super) fn edges_of(&mut self, set: &FoundSet) -> Result<PathBuf> {
        if self.edges.is_none() {
            let made = tempfile::Builder::new()
                .prefix("darvault-edges.")
                .tempdir()
                .map_err(|e| Error::Failed(format!("cannot make a temporary folder: {e}")))?;
            self.edges = Some(made);
        }
        let dir = self
            .edges
            .as_ref()
            .expect("made")
            .path()
            .join(&set.manifest.set.name);
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
        Ok(dir)
    }

    /// The set's isolated catalogue, proven; the basename dar is given.
    pub(super) fn catalogue(&mut self, set: &FoundSet) -> Result<PathBuf> {
        let name = &set.manifest.archive.catalogue;
        Ok(self
            .file(set, &format!("{name}.1.dar"))?
            .with_file_name(name))
    }
}
