//! The restore test: extract a random sample of files whose data is stored in this archive and
//! compare them with the source byte for byte, plus permissions and modification time.
//!
//! Only entries with `data="saved"` qualify: in a DIFF/INCR an unchanged file (hard-linked or
//! not) is only referenced, and extracting it from this archive alone yields nothing. Files
//! that dar saw change while reading them are skipped, and a sampled file whose source changed
//! after the backup started (its ctime says so) is reported, not counted as a defect.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::RestoreTest;
use crate::error::{Error, Result};
use crate::set::manifest::{RestoreTestOutcome, RestoreTestRecord};
use crate::tools::dar::{Dar, DataState, Entry, EntryKind, Layout};
use crate::tools::secret::Passphrase;

/// The archive under test and how to read it.
pub struct Archive<'a> {
    pub dar: &'a Dar,
    pub path: &'a Path,
    pub key: Option<&'a Passphrase>,
}

/// Reservoir sampling over the listing: memory stays bounded by the sample size however many
/// files the archive holds.
pub struct Sampler<'a> {
    settings: &'a RestoreTest,
    chosen: Vec<Entry>,
    eligible: u64,
    rng: fastrand::Rng,
    /// The smallest file above the window (up to `partial_max_size`), in case none fits.
    large: Option<Entry>,
}

impl<'a> Sampler<'a> {
    pub fn new(settings: &'a RestoreTest) -> Self {
        Sampler {
            settings,
            chosen: Vec::with_capacity(settings.count),
            eligible: 0,
            rng: fastrand::Rng::new(),
            large: None,
        }
    }

    pub fn offer(&mut self, entry: &Entry) {
        if !self.qualifies(entry) {
            let s = self.settings;
            let large = (s.max_size.0 + 1..=s.partial_max_size.0).contains(&entry.size);
            if large
                && self.qualifies_but_for_size(entry)
                && self.large.as_ref().is_none_or(|l| entry.size < l.size)
            {
                self.large = Some(entry.clone());
            }
            return;
        }
        self.eligible += 1;
        if self.chosen.len() < self.settings.count {
            self.chosen.push(entry.clone());
        } else {
            let slot = self.rng.u64(0..self.eligible) as usize;
            if slot < self.chosen.len() {
                self.chosen[slot] = entry.clone();
            }
        }
    }

    fn qualifies(&self, e: &Entry) -> bool {
        let s = self.settings;
        (s.min_size.0..=s.max_size.0).contains(&e.size) && self.qualifies_but_for_size(e)
    }

    fn qualifies_but_for_size(&self, e: &Entry) -> bool {
        let s = self.settings;
        e.kind == EntryKind::File
            && e.data == DataState::Saved
            && !e.dirty
            && !s
                .exclude_prefixes
                .iter()
                .any(|p| e.path.starts_with(p.as_str()))
            && !s
                .exclude_suffixes
                .iter()
                .any(|p| e.path.ends_with(p.as_str()))
            && !s.exclude_regex.iter().any(|r| r.0.is_match(&e.path))
    }
}

/// What the test found; `changed` and `mismatches` name files.
pub struct Outcome {
    pub record: RestoreTestRecord,
    /// Sampled files that changed in the source after the backup started.
    pub changed: Vec<String>,
}

/// Extract the sample into `scratch` and compare. `started` is when `dar -c` began: a source
/// file changed after it is not evidence against the archive.
pub fn run(
    archive: &Archive,
    source: &Path,
    scratch: &Path,
    sampler: Sampler,
    started: std::time::SystemTime,
) -> Result<Outcome> {
    let eligible = sampler.eligible;
    let mut sample = sampler.chosen;
    sample.sort_by(|a, b| a.path.cmp(&b.path));
    // Nothing fits the window: a larger file, compared in part, is still evidence.
    let partial = sample.is_empty() && sampler.large.is_some();
    sample.extend(sampler.large.filter(|_| partial));
    if sample.is_empty() {
        return Ok(Outcome {
            record: RestoreTestRecord {
                outcome: RestoreTestOutcome::NothingEligible,
                eligible,
                compared: 0,
                changed_since: 0,
                partial: None,
            },
            changed: Vec::new(),
        });
    }
    let paths: Vec<String> = sample.iter().map(|e| e.path.clone()).collect();
    let not_restored = archive.dar.extract(
        crate::tools::dar::Archive::Slices(archive.path),
        None,
        archive.key,
        scratch,
        &paths,
        Layout::Tree,
    )?;
    if !not_restored.is_empty() {
        let named: Vec<String> = not_restored
            .iter()
            .map(|n| format!("{}: {}", n.path, n.reason))
            .collect();
        return Err(Error::Failed(format!(
            "restore test failed: dar could not restore {}",
            named.join("; ")
        )));
    }
    let started = started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let mut changed = Vec::new();
    let mut mismatches = Vec::new();
    for entry in &sample {
        let src = source.join(&entry.path);
        let meta = match std::fs::symlink_metadata(&src) {
            Ok(m) => m,
            Err(_) => {
                changed.push(format!("{} (removed from the source since)", entry.path));
                continue;
            }
        };
        if changed_since(&meta, started) {
            changed.push(entry.path.clone());
            continue;
        }
        let how = match partial {
            true => Compare::Ranges(ranges(meta.len(), &mut fastrand::Rng::new())),
            false => Compare::Whole,
        };
        let verdict = differs(&src, &scratch.join(&entry.path), &meta, &how);
        // A source file that changed (or shrank) while it was being compared is no evidence
        // against the archive.
        let changed_meanwhile =
            || std::fs::symlink_metadata(&src).map_or(true, |m| changed_since(&m, started));
        match verdict {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) if changed_meanwhile() => changed.push(entry.path.clone()),
            Ok(Some(why)) => mismatches.push(format!("{}: {why}", entry.path)),
            Err(e) => return Err(e),
        }
    }
    if !mismatches.is_empty() {
        return Err(Error::Failed(format!(
            "restore test failed: {} of {} sampled files differ from the source: {}",
            mismatches.len(),
            sample.len(),
            mismatches.join("; ")
        )));
    }
    let compared = (sample.len() - changed.len()) as u64;
    Ok(Outcome {
        record: RestoreTestRecord {
            // Nothing compared is no evidence: never called "passed".
            outcome: if compared == 0 {
                RestoreTestOutcome::NotTested
            } else {
                RestoreTestOutcome::Passed
            },
            eligible,
            compared,
            changed_since: changed.len() as u64,
            partial: (partial && compared > 0).then(|| {
                format!(
                    "{} ({} bytes, above max_size): size, mode, time, and its first, last and one random MiB",
                    sample[0].path, sample[0].size
                )
            }),
        },
        changed,
    })
}

/// Whether the file's inode changed at or after `started` (nanoseconds since the epoch).
fn changed_since(meta: &std::fs::Metadata, started: i128) -> bool {
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()) >= started
}

/// How much of a restored file is compared with the source.
enum Compare {
    Whole,
    /// These byte ranges (offset, length).
    Ranges(Vec<(u64, u64)>),
}

/// The first and last MiB of a file of `size` bytes, and one random MiB between.
fn ranges(size: u64, rng: &mut fastrand::Rng) -> Vec<(u64, u64)> {
    const MIB: u64 = 1 << 20;
    let len = MIB.min(size);
    let last = size - len;
    vec![(0, len), (rng.u64(0..=last), len), (last, len)]
}

/// Why the extracted file differs from the source, if it does.
fn differs(
    src: &Path,
    restored: &Path,
    src_meta: &std::fs::Metadata,
    how: &Compare,
) -> Result<Option<String>> {
    let meta = match std::fs::symlink_metadata(restored) {
        Ok(m) => m,
        Err(_) => return Ok(Some("not extracted".into())),
    };
    let mut why = Vec::new();
    let same = meta.len() == src_meta.len()
        && match how {
            Compare::Whole => same_bytes(src, restored)?,
            Compare::Ranges(ranges) => same_ranges(src, restored, ranges)?,
        };
    if !same {
        why.push("content differs".to_owned());
    }
    if meta.mode() & 0o7777 != src_meta.mode() & 0o7777 {
        why.push(format!(
            "mode {:o} vs {:o} in the source",
            meta.mode() & 0o7777,
            src_meta.mode() & 0o7777
        ));
    }
    if meta.mtime() != src_meta.mtime() {
        why.push("modification time differs".to_owned());
    }
    Ok((!why.is_empty()).then(|| why.join(", ")))
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = File::open(a).map_err(Error::io("cannot open", a))?;
    let mut fb = File::open(b).map_err(Error::io("cannot open", b))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(Error::io("cannot read", a))?;
        let m = read_full(&mut fb, &mut bb).map_err(Error::io("cannot read", b))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn same_ranges(a: &Path, b: &Path, ranges: &[(u64, u64)]) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let fa = File::open(a).map_err(Error::io("cannot open", a))?;
    let fb = File::open(b).map_err(Error::io("cannot open", b))?;
    for &(offset, len) in ranges {
        let (mut ba, mut bb) = (vec![0u8; len as usize], vec![0u8; len as usize]);
        fa.read_exact_at(&mut ba, offset)
            .map_err(Error::io("cannot read", a))?;
        fb.read_exact_at(&mut bb, offset)
            .map_err(Error::io("cannot read", b))?;
        if ba != bb {
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64, data: DataState) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            data,
            size,
            mtime: 0,
            mode: None,
            dirty: false,
        }
    }

    #[test]
    fn samples_only_data_stored_in_this_archive_within_the_window() {
        let settings = RestoreTest {
            count: 10,
            max_size: crate::config::ByteSize(100),
            exclude_suffixes: vec![".log".into()],
            ..RestoreTest::default()
        };
        let mut s = Sampler::new(&settings);
        s.offer(&entry("a", 10, DataState::Saved));
        s.offer(&entry("hardlink-ref", 10, DataState::Referenced));
        s.offer(&entry("gone", 0, DataState::Deleted));
        s.offer(&entry("huge", 1000, DataState::Saved));
        s.offer(&entry("x.log", 10, DataState::Saved));
        let chosen: Vec<_> = s.chosen.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(chosen, ["a"]);
        assert_eq!(s.eligible, 1);
    }

    #[test]
    fn a_file_above_the_window_is_kept_in_case_none_fits() {
        let settings = RestoreTest {
            max_size: crate::config::ByteSize(100),
            partial_max_size: crate::config::ByteSize(10_000),
            ..RestoreTest::default()
        };
        let mut s = Sampler::new(&settings);
        s.offer(&entry("big", 5000, DataState::Saved));
        s.offer(&entry("bigger", 9000, DataState::Saved));
        s.offer(&entry("too big", 20_000, DataState::Saved));
        s.offer(&entry("big ref", 200, DataState::Referenced));
        assert!(s.chosen.is_empty());
        assert_eq!(s.large.map(|e| e.path), Some("big".to_owned()));
        let r = ranges(5 << 20, &mut fastrand::Rng::with_seed(1));
        assert_eq!((r[0], r[2]), ((0, 1 << 20), (4 << 20, 1 << 20)));
        assert!(r[1].0 <= 4 << 20);
        assert_eq!(ranges(10, &mut fastrand::Rng::new())[2], (0, 10));
    }

    #[test]
    fn the_reservoir_stays_bounded() {
        let settings = RestoreTest {
            count: 3,
            ..RestoreTest::default()
        };
        let mut s = Sampler::new(&settings);
        for i in 0..1000 {
            s.offer(&entry(&format!("f{i}"), 1, DataState::Saved));
        }
        assert_eq!((s.chosen.len(), s.eligible), (3, 1000));
    }
}
