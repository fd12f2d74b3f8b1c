//! PAR2 redundancy through an external `par2`: par2cmdline-turbo preferred (a static binary
//! that also goes into each set's bundle), par2cmdline accepted with a warning. `-p` (which
//! deletes the PAR2 files after a repair) is never used.
//!
//! Layout (see docs/sets.md). Small slices (at most `par2_whole_slice_max`): groups of
//! `ceil(100 / redundancy)` consecutive slices, one PAR2 set per group, each with at least one
//! slice of recovery data, so every group survives the loss of a whole slice. Large slices:
//! one PAR2 set per slice at the configured percentage (bitrot repair; a lost slice is healed
//! from another copy), made as soon as dar has finished the slice, on the core dar's
//! single-threaded compression leaves free. Memory stays bounded by the slice size whatever
//! the archive size, and the block size divides the slice size so a lost slice is a whole
//! number of blocks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::process::{Spec, find_executable};
use crate::error::{Error, Result};

const INSTALL_HINT: &str = "install par2cmdline-turbo (scripts/setup does) or Debian's par2";
/// par2 allows at most 32768 source blocks per set, and time grows with the block count:
/// measured with turbo on a 290 MB slice, 64 KiB blocks took 1.58 s, 1 MiB blocks 0.53 s.
const MAX_BLOCKS: u64 = 32768;
/// Blocks per group at most (larger groups get larger blocks).
const MAX_USEFUL_BLOCKS: u64 = 4000;
/// Blocks per group at least (small sets keep a fine repair granularity).
const MIN_USEFUL_BLOCKS: u64 = 200;
const MIN_BLOCK: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Turbo,
    Classic,
}

#[derive(Debug, Clone)]
pub struct Par2 {
    pub path: PathBuf,
    pub engine: Engine,
    pub version: String,
    /// Reading a copy that may hang: stopped after reading nothing for this long.
    pub io_stall: Option<std::time::Duration>,
}

/// One PAR2 set of a layout, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The index file; recovery volumes are `<index stem>.volNN+MM.par2`.
    pub index: String,
    /// The files this PAR2 set protects (relative to the set directory).
    pub covers: Vec<String>,
    pub block_size: u64,
    pub source_blocks: u64,
    pub recovery_blocks: u64,
    /// Recovery data as a percentage of the covered bytes (rounded).
    pub redundancy_percent: u32,
}

impl Par2 {
    pub fn locate(explicit: Option<&Path>) -> Result<Par2> {
        let path = find_executable("par2", explicit, INSTALL_HINT)?;
        let (_, out) = Spec::new(&path).arg("--version").output()?;
        let first = out
            .lines()
            .find(|l| l.contains("version"))
            .unwrap_or("")
            .trim()
            .to_owned();
        let engine = if first.contains("turbo") {
            Engine::Turbo
        } else {
            Engine::Classic
        };
        let version = first.rsplit(' ').next().unwrap_or("unknown").to_owned();
        if first.is_empty() {
            return Err(Error::MissingTool {
                tool: path.display().to_string(),
                hint: format!("it does not answer --version like par2 does; {INSTALL_HINT}"),
            });
        }
        if engine == Engine::Classic {
            tracing::warn!(
                "using {} (par2cmdline {version}): about 9x slower than par2cmdline-turbo, and \
                 versions before 1.2.0 have two repair advisories (a heap overflow, symlinks \
                 followed outside the base path); install par2cmdline-turbo (scripts/setup)",
                path.display()
            );
        }
        Ok(Par2 {
            path,
            engine,
            version,
            io_stall: None,
        })
    }

    /// How the engine is named in manifests.
    pub fn describe(&self) -> String {
        match self.engine {
            Engine::Turbo => format!("par2cmdline-turbo {}", self.version),
            Engine::Classic => format!("par2cmdline {}", self.version),
        }
    }

    /// Create the PAR2 set for `group` inside `dir` (which holds the covered files).
    pub fn create(&self, dir: &Path, group: &Group) -> Result<()> {
        self.create_with(dir, group, None)
    }

    /// `create` on one thread: beside a single-threaded `dar -c`, a par2 on every core
    /// would take dar's, and dar is the longest step of a backup. (par2cmdline-turbo has
    /// `-t`; an older par2cmdline may not, and runs as it would.)
    pub fn create_on_one_core(&self, dir: &Path, group: &Group) -> Result<()> {
        let threads = (self.engine == Engine::Turbo).then_some(1);
        self.create_with(dir, group, threads)
    }

    fn create_with(&self, dir: &Path, group: &Group, threads: Option<u32>) -> Result<()> {
        // Enough memory for one pass where that is at most 1 GiB; beyond, par2 makes passes.
        let memory_mb =
            ((group.recovery_blocks * group.block_size).div_ceil(1 << 20) + 64).min(1024);
        let mut s = Spec::new(&self.path);
        s.io_stall(self.io_stall)
            .current_dir(dir)
            .arg("create")
            .arg("-q")
            .arg(format!("-s{}", group.block_size))
            .arg(format!("-c{}", group.recovery_blocks))
            .arg(format!("-m{}", memory_mb.max(256)));
        if let Some(n) = threads {
            s.arg(format!("-t{n}"));
        }
        s.arg("-B").arg(dir).arg("--").arg(dir.join(&group.index));
        for f in &group.covers {
            s.arg(dir.join(f));
        }
        s.output()?.0.expect(&[0]).map(|_| ())
    }
}

/// What `par2 verify` or `par2 repair` concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// All covered files are intact (verify), or were repaired (repair).
    Intact,
    /// Damage that the recovery data can repair (verify only).
    Repairable,
    /// More damage than the recovery data covers.
    NotRepairable,
}

impl Par2 {
    /// `par2 verify` (`repair = false`) or `par2 repair` of the PAR2 set `index` in `dir`.
    /// Never `-p`: repair keeps the PAR2 files; damaged originals are left as `<name>.1`.
    pub fn check(&self, dir: &Path, index: &str, repair: bool) -> Result<Verdict> {
        let mut s = Spec::new(&self.path);
        s.io_stall(self.io_stall)
            .current_dir(dir)
            .arg(if repair { "repair" } else { "verify" })
            .arg("-q")
            .arg("-B")
            .arg(dir)
            .arg("--")
            .arg(dir.join(index));
        let (finished, _) = s.output()?;
        match finished.code() {
            Some(0) => Ok(Verdict::Intact),
            Some(1) if !repair => Ok(Verdict::Repairable),
            Some(2) | Some(4) | Some(5) => Ok(Verdict::NotRepairable),
            _ => Err(finished.failure()),
        }
    }
}

/// How the slices of an archive are protected (see the module comment and docs/sets.md).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    percent: u32,
    slice_size: u64,
    /// Large slices: one PAR2 set per slice, made as soon as dar has finished the slice.
    per_slice: bool,
    /// Small slices: slices per group, so that a full group survives a lost slice.
    per_group: usize,
    /// The block size preferred (see `block_size`).
    block: u64,
}

impl Layout {
    pub fn new(slice_size: u64, percent: u32, whole_slice_max: u64) -> Layout {
        Layout {
            percent: percent.max(1),
            slice_size,
            per_slice: slice_size > whole_slice_max,
            per_group: 100u32.div_ceil(percent.max(1)) as usize,
            block: crate::config::DEFAULT_PAR2_BLOCK,
        }
    }

    /// Blocks of `block` bytes (a power of two) where the bounds allow: smaller blocks repair
    /// more separate damaged places at the same redundancy and cost more CPU.
    pub fn with_block(self, block: u64) -> Layout {
        Layout { block, ..self }
    }

    /// The PAR2 set of slice `n` (1-based), when it can be made before dar has finished the
    /// archive: with large slices, for every slice but the last (which carries the catalogue).
    pub fn early_group(&self, set_name: &str, n: usize, slice: &(String, u64)) -> Option<Group> {
        self.per_slice.then(|| {
            self.group(
                format!("{set_name}.part{n:02}.par2"),
                vec![slice.clone()],
                false,
            )
        })
    }

    /// Every PAR2 set of the archive. `slices` in order; `extra` (the catalogue) joins the last.
    pub fn plan(
        &self,
        set_name: &str,
        slices: &[(String, u64)],
        extra: &[(String, u64)],
    ) -> Vec<Group> {
        let size = if self.per_slice { 1 } else { self.per_group };
        let chunks: Vec<&[(String, u64)]> = slices.chunks(size).collect();
        let count = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut files = chunk.to_vec();
                if i + 1 == count {
                    files.extend(extra.iter().cloned());
                }
                let index = if count == 1 {
                    format!("{set_name}.par2")
                } else {
                    format!("{set_name}.part{:02}.par2", i + 1)
                };
                // Small slices: a group of two or more survives the loss of a whole slice.
                let bump = !self.per_slice && chunk.len() >= 2;
                self.group(index, files, bump)
            })
            .collect()
    }

    fn group(&self, index: String, files: Vec<(String, u64)>, whole_slice: bool) -> Group {
        let bytes: u64 = files.iter().map(|f| f.1).sum();
        let block_size = block_size(bytes, self.slice_size, self.block);
        let source_blocks: u64 = files.iter().map(|f| f.1.div_ceil(block_size).max(1)).sum();
        let mut recovery_blocks = (source_blocks * u64::from(self.percent))
            .div_ceil(100)
            .max(1);
        if whole_slice {
            let largest = files
                .iter()
                .map(|f| f.1.div_ceil(block_size))
                .max()
                .unwrap_or(0);
            recovery_blocks = recovery_blocks.max(largest);
        }
        Group {
            index,
            covers: files.into_iter().map(|f| f.0).collect(),
            block_size,
            source_blocks,
            recovery_blocks,
            redundancy_percent: ((recovery_blocks * 100 + source_blocks / 2) / source_blocks.max(1))
                as u32,
        }
    }
}

/// A power of two (at least 4 KiB) that divides the slice size: `preferred` where that gives
/// between MIN_USEFUL_BLOCKS and MAX_USEFUL_BLOCKS blocks, else the nearest bound; never more
/// blocks than par2 allows.
fn block_size(bytes: u64, slice_size: u64, preferred: u64) -> u64 {
    let for_max = bytes.div_ceil(MAX_USEFUL_BLOCKS).next_power_of_two();
    let for_min = bytes.div_ceil(MIN_USEFUL_BLOCKS).next_power_of_two();
    let mut bs = for_max.max(preferred.min(for_min)).max(MIN_BLOCK);
    while bs > MIN_BLOCK && !slice_size.is_multiple_of(bs) {
        bs /= 2;
    }
    if bytes.div_ceil(bs) > MAX_BLOCKS {
        // The slice size has few factors of two: give up alignment, respect the limit.
        bs = bytes.div_ceil(MAX_BLOCKS - 64).next_multiple_of(4);
    }
    bs
}

/// The files par2 wrote for a group: the index and its recovery volumes.
pub fn files_of(dir: &Path, group: &Group) -> Result<Vec<String>> {
    let stem = group.index.trim_end_matches(".par2");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(Error::io("cannot read", dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n == &group.index || (n.starts_with(&format!("{stem}.vol")) && n.ends_with(".par2"))
        })
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(n: usize, size: u64, last: u64) -> Vec<(String, u64)> {
        (1..=n)
            .map(|i| (format!("s.{i}.dar"), if i == n { last } else { size }))
            .collect()
    }

    #[test]
    fn a_small_multi_slice_set_survives_a_lost_slice() {
        let layout = Layout::new(1 << 20, 10, 64 << 20);
        let g = layout.plan(
            "s",
            &slices(3, 1 << 20, 300_000),
            &[("s.catalog.1.dar".into(), 2000)],
        );
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].index, "s.par2");
        assert_eq!(g[0].covers.len(), 4);
        assert_eq!((1u64 << 20) % g[0].block_size, 0, "slices are whole blocks");
        assert!(g[0].recovery_blocks >= (1 << 20) / g[0].block_size);
    }

    #[test]
    fn full_groups_of_small_slices_survive_a_lost_slice_at_no_extra_cost() {
        let slice = 64u64 << 20;
        let g = Layout::new(slice, 10, 64 << 20).plan("s", &slices(25, slice, slice / 2), &[]);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].covers.len(), 10);
        assert_eq!(g[0].redundancy_percent, 10);
        assert!(g[0].recovery_blocks * g[0].block_size >= slice);
        assert_eq!(g[0].index, "s.part01.par2");
    }

    #[test]
    fn large_slices_get_one_set_each_that_can_be_made_early() {
        let slice = 1u64 << 30;
        let layout = Layout::new(slice, 10, 64 << 20);
        let all = slices(124, slice, slice / 2);
        let g = layout.plan("s", &all, &[("s.catalog.1.dar".into(), 9000)]);
        assert_eq!(g.len(), 124);
        assert!(
            g.iter()
                .all(|g| g.source_blocks <= MAX_BLOCKS && g.redundancy_percent == 10)
        );
        assert_eq!(g[123].covers.len(), 2, "the catalogue joins the last slice");
        assert_eq!(
            layout.early_group("s", 1, &all[0]).as_ref(),
            Some(&g[0]),
            "made early, the same set"
        );
        assert!(
            Layout::new(1 << 20, 10, 64 << 20)
                .early_group("s", 1, &all[0])
                .is_none()
        );
    }

    #[test]
    fn the_block_size_is_the_one_preferred_where_the_bounds_allow() {
        let slice = 1u64 << 30;
        let one = slices(1, slice, slice);
        let default = Layout::new(slice, 10, 64 << 20).plan("s", &one, &[]);
        assert_eq!(
            (default[0].block_size, default[0].recovery_blocks),
            (4 << 20, 26)
        );
        let finer = Layout::new(slice, 10, 64 << 20).with_block(2 << 20);
        let finer = finer.plan("s", &one, &[]);
        assert_eq!(
            (finer[0].block_size, finer[0].recovery_blocks),
            (2 << 20, 52)
        );
        // A 64 MiB slice keeps at least MIN_USEFUL_BLOCKS / 2 blocks, not 16 of 4 MiB.
        let small = Layout::new(64 << 20, 10, 0).plan("s", &slices(1, 64 << 20, 64 << 20), &[]);
        assert!(small[0].source_blocks >= MIN_USEFUL_BLOCKS / 2);
    }

    #[test]
    fn one_slice_gets_the_plain_percentage() {
        let g = Layout::new(1 << 30, 5, 64 << 20).plan("s", &slices(1, 1 << 30, 5_000_000), &[]);
        assert_eq!(
            (g[0].index.as_str(), g[0].redundancy_percent),
            ("s.par2", 5)
        );
    }
}
