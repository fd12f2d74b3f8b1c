//! PAR2 redundancy through an external `par2`: par2cmdline-turbo preferred (a static binary
//! that also goes into each set's bundle), par2cmdline accepted with a warning. `-p` (which
//! deletes the PAR2 files after a repair) is never used.
//!
//! Layout (see docs/sets.md): the slices of an archive are split into groups of consecutive
//! slices, `ceil(100 / redundancy)` slices per group, one PAR2 set per group. At the configured
//! percentage a full group then carries about one slice of recovery data, so it survives the
//! loss of a whole slice; a smaller group (the last one, or a small archive) of two slices or
//! more gets at least one slice's worth of recovery data when slices are small (at most
//! `par2_whole_slice_max`), so that small sets survive a lost slice without tripling the
//! cost of large ones. Memory stays bounded by the slice size whatever the archive size, and
//! the block size divides the slice size so a lost slice is a whole number of blocks.

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
/// The block size that is fast where the two bounds above allow it.
const FAST_BLOCK: u64 = 1 << 20;
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
        // Enough memory for one pass where that is at most 1 GiB; beyond, par2 makes passes.
        let memory_mb =
            ((group.recovery_blocks * group.block_size).div_ceil(1 << 20) + 64).min(1024);
        let mut s = Spec::new(&self.path);
        s.current_dir(dir)
            .arg("create")
            .arg("-q")
            .arg(format!("-s{}", group.block_size))
            .arg(format!("-c{}", group.recovery_blocks))
            .arg(format!("-m{}", memory_mb.max(256)))
            .arg("-B")
            .arg(dir)
            .arg("--")
            .arg(dir.join(&group.index));
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
        s.current_dir(dir)
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

/// Plan the PAR2 groups of an archive. `slices` are (file name, size) in slice order; `extra`
/// files (the catalogue) join the last group.
pub fn plan_groups(
    set_name: &str,
    slices: &[(String, u64)],
    extra: &[(String, u64)],
    slice_size: u64,
    percent: u32,
    whole_slice_max: u64,
) -> Vec<Group> {
    let per_group = 100u32.div_ceil(percent.max(1)) as usize;
    let chunks: Vec<&[(String, u64)]> = slices.chunks(per_group.max(1)).collect();
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut files: Vec<(String, u64)> = chunk.to_vec();
            if i + 1 == count {
                files.extend(extra.iter().cloned());
            }
            let bytes: u64 = files.iter().map(|f| f.1).sum();
            let block_size = block_size(bytes, slice_size);
            let source_blocks: u64 = files.iter().map(|f| f.1.div_ceil(block_size).max(1)).sum();
            let mut recovery_blocks = (source_blocks * u64::from(percent)).div_ceil(100).max(1);
            let largest = chunk.iter().map(|f| f.1).max().unwrap_or(0);
            if chunk.len() >= 2 && largest <= whole_slice_max {
                recovery_blocks = recovery_blocks.max(largest.div_ceil(block_size));
            }
            let index = if count == 1 {
                format!("{set_name}.par2")
            } else {
                format!("{set_name}.part{:02}.par2", i + 1)
            };
            Group {
                index,
                covers: files.into_iter().map(|f| f.0).collect(),
                block_size,
                source_blocks,
                recovery_blocks,
                redundancy_percent: ((recovery_blocks * 100 + source_blocks / 2)
                    / source_blocks.max(1)) as u32,
            }
        })
        .collect()
}

/// A power of two (at least 4 KiB) that divides the slice size: 1 MiB where that gives between
/// MIN_USEFUL_BLOCKS and MAX_USEFUL_BLOCKS blocks, else the nearest bound; never more blocks
/// than par2 allows.
fn block_size(bytes: u64, slice_size: u64) -> u64 {
    let for_max = bytes.div_ceil(MAX_USEFUL_BLOCKS).next_power_of_two();
    let for_min = bytes.div_ceil(MIN_USEFUL_BLOCKS).next_power_of_two();
    let mut bs = for_max.max(FAST_BLOCK.min(for_min)).max(MIN_BLOCK);
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
        let g = plan_groups(
            "s",
            &slices(3, 1 << 20, 300_000),
            &[("s.catalog.1.dar".into(), 2000)],
            1 << 20,
            10,
            64 << 20,
        );
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].covers.len(), 4);
        assert_eq!((1u64 << 20) % g[0].block_size, 0, "slices are whole blocks");
        assert!(g[0].recovery_blocks >= (1 << 20) / g[0].block_size);
    }

    #[test]
    fn large_archives_are_split_so_memory_stays_bounded() {
        let slice = 1u64 << 30;
        let g = plan_groups(
            "s",
            &slices(124, slice, slice / 2),
            &[],
            slice,
            10,
            64 << 20,
        );
        assert_eq!(g.len(), 13);
        assert_eq!(g[0].covers.len(), 10);
        assert!(g.iter().all(|g| g.source_blocks <= MAX_BLOCKS));
        // A full group's percentage already covers one slice: no extra cost.
        assert_eq!(g[0].redundancy_percent, 10);
        assert!(g[0].recovery_blocks * g[0].block_size >= slice);
        assert_eq!(g[0].index, "s.part01.par2");
    }

    #[test]
    fn one_slice_gets_the_plain_percentage() {
        let g = plan_groups(
            "s",
            &slices(1, 1 << 30, 5_000_000),
            &[],
            1 << 30,
            5,
            64 << 20,
        );
        assert_eq!(g[0].redundancy_percent, 5);
    }

    #[test]
    fn large_slices_in_a_small_group_keep_the_plain_percentage() {
        let slice = 1u64 << 30;
        let g = plan_groups("s", &slices(3, slice, slice / 4), &[], slice, 10, 64 << 20);
        assert_eq!(
            g[0].redundancy_percent, 10,
            "no whole-slice bump for 1 GiB slices"
        );
        let g = plan_groups("s", &slices(3, slice, slice / 4), &[], slice, 10, slice);
        assert!(
            g[0].recovery_blocks * g[0].block_size >= slice,
            "unless asked for"
        );
    }
}
