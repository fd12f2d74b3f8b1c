//! MANIFEST.toml: what a set is, what it depends on, and every file in it with its size and
//! SHA-256 — enough for anyone to prove the set years from now with a text editor and
//! `sha256sum`. SHA256SUMS lists every file including MANIFEST.toml, so `sha256sum -c` alone
//! proves a set, and damage to either file is detected by the other.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Level, MANIFEST, Role, SHA256SUMS};
use crate::error::{Error, Result};

/// Version of the manifest schema; readers refuse versions newer than they know.
/// 2: the definition as it was used (`[definition]`). Format 1 manifests still read.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version of this file.
    pub format: u32,
    pub darvault_version: String,
    pub set: SetInfo,
    pub archive: ArchiveInfo,
    pub tools: ToolVersions,
    /// The definition as it was used for this set (format 2; absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<DefinitionRecord>,
    pub checks: Checks,
    /// The PAR2 sets protecting the slices and the catalogue.
    #[serde(rename = "par2", default)]
    pub par2: Vec<crate::tools::par2::Group>,
    #[serde(rename = "file", default)]
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetInfo {
    pub name: String,
    pub definition: String,
    pub level: Level,
    /// When the set was started (UTC).
    pub created: jiff::Timestamp,
    pub host: String,
    /// The sets this one needs, oldest (the FULL) first; empty for a FULL.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The set this DIFF/INCR was made against, and the SHA-256 of its MANIFEST.toml.
    pub base: Option<BaseRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRef {
    pub name: String,
    pub manifest_sha256: String,
}

/// The dar options a restore needs to know about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// dar's basename: slices are `<basename>.<N>.dar`.
    pub basename: String,
    pub slices: u32,
    pub slice_size: u64,
    pub compression: String,
    pub encrypted: bool,
    /// Basename of the isolated catalogue (`<catalogue>.1.dar`).
    pub catalogue: String,
    /// Inodes dar saved in this archive.
    pub saved_files: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolVersions {
    pub dar: String,
    pub par2: String,
}

/// What the set was meant to hold and how it was made: the definition when it was used, so
/// that years later the set explains itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    pub source: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub prune: Vec<String>,
    pub cache_directory_tagging: bool,
    pub compression: String,
    pub no_compress: Vec<String>,
    pub dar_options: Vec<String>,
    pub slice_size: u64,
    /// PAR2 percent for this set's level.
    pub redundancy_percent: u32,
    /// Where a second copy of the set's PAR2 files was kept, on the machine that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub par2_dir: Option<String>,
}

/// What was proven before the set was published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// `dar -t` of the archive: "passed".
    pub dar_test: String,
    pub restore_test: RestoreTestRecord,
    /// Source files dar could not read or saw change (the set lacks or may hold a torn copy).
    #[serde(default)]
    pub warnings: u64,
    /// `par2 verify` of every PAR2 set before publication: "passed", or absent when not
    /// asked for (`par2_verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub par2_verify: Option<String>,
    /// Source files dar could not read (permission denied, vanished), relative to the
    /// source, with dar's reason: the set lacks them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_saved: Vec<NotSaved>,
}

/// A source file that is not in the set, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotSaved {
    pub path: String,
    pub reason: String,
}

/// What the restore test of a set found, as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreTestOutcome {
    /// Every file sampled came back identical to the source.
    #[serde(rename = "passed")]
    Passed,
    /// No file stored in the archive qualified for the sample.
    #[serde(rename = "nothing eligible")]
    NothingEligible,
    /// Every sampled file changed in the source after dar read it: no evidence either way.
    #[serde(rename = "not tested")]
    NotTested,
    /// A word a newer darvault wrote (the manifest still reads).
    #[serde(other, rename = "unknown")]
    Unknown,
}

impl RestoreTestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreTestOutcome::Passed => "passed",
            RestoreTestOutcome::NothingEligible => "nothing eligible",
            RestoreTestOutcome::NotTested => "not tested",
            RestoreTestOutcome::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for RestoreTestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreTestRecord {
    pub outcome: RestoreTestOutcome,
    /// Files whose data is stored in this archive and that qualified for sampling.
    pub eligible: u64,
    /// Files extracted and compared with the source.
    pub compared: u64,
    /// Sampled files that had changed in the source after dar read them (not comparable).
    pub changed_since: u64,
    /// A file too large for the sample compared in part instead (when nothing fitted):
    /// its path and which bytes were compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the set directory, '/'-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub role: Role,
    /// For a file large enough to go to an S3 copy in parts: each part's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartDigests>,
}

/// A file cut in parts of `size` bytes (the last may be shorter), with the SHA-256 of each:
/// what an S3 copy keeps of a file sent in parts is the composite of these digests, so an
/// audit recomputes it from the manifest and proves the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartDigests {
    pub size: u64,
    pub sha256: Vec<String>,
}

impl FileEntry {
    /// A program of the bundle (dar_static, par2, darvault): kept executable on copies that
    /// keep modes.
    pub fn is_program(&self) -> bool {
        self.role == Role::Bundle && !self.path.ends_with(".txt")
    }
}

/// The largest file S3 takes in one PUT: a larger one goes to an S3 copy in parts, and its
/// manifest entry records them.
pub const SINGLE_PUT_MAX: u64 = 5 << 30;
/// The smallest part (S3 takes 5 MiB to 5 GiB; 10,000 parts at most).
const PART: u64 = 16 << 20;
pub const MOST_PARTS: u64 = 10_000;

/// The size of the parts a file of `size` bytes goes to an S3 copy in (the size its
/// manifest entry records their digests for); None when it goes in one PUT.
pub fn parts_for(size: u64) -> Option<u64> {
    let single = crate::fault::single_put_max(SINGLE_PUT_MAX);
    (size > single).then(|| part_size(size))
}

/// The size of each part (the last may be smaller) of a file of `size` bytes.
pub fn part_size(size: u64) -> u64 {
    let mib = 1 << 20;
    PART.max(size.div_ceil(MOST_PARTS).div_ceil(mib) * mib)
}

impl PartDigests {
    /// Whether these parts cut a file of `size` bytes: one digest per part, each a SHA-256.
    pub fn fit(&self, size: u64) -> bool {
        let hex = |d: &String| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit());
        self.size > 0
            && self.sha256.len() as u64 == size.div_ceil(self.size).max(1)
            && self.sha256.iter().all(hex)
    }
}

/// No file of a set is larger than this (1 PiB): a larger size is a damaged or crafted manifest.
const MAX_FILE_SIZE: u64 = 1 << 50;

impl Manifest {
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("a manifest always serializes");
        format!(
            "# darvault archive set manifest (format {FORMAT}).\n\
             # Every file of this set except this one and SHA256SUMS, with its size and SHA-256.\n\
             # Check the whole set with: sha256sum -c SHA256SUMS   (run inside this directory)\n\n{body}"
        )
    }

    /// Whether this set's bundle carries its chain's tools (a static dar among them):
    /// `bundle/<architecture>/dar_static`, or `bundle/dar_static` in a bundle made before
    /// tools were carried per architecture.
    pub fn carries_tools(&self) -> bool {
        self.files.iter().any(|f| {
            f.path.strip_prefix("bundle/").is_some_and(|p| {
                p == "dar_static"
                    || p.strip_suffix("/dar_static")
                        .is_some_and(|a| !a.contains('/'))
            })
        })
    }

    /// The bundle's `program` for this machine: `bundle/<its architecture>/<program>`, else
    /// that of a bundle made before tools were carried per architecture (`bundle/<program>`,
    /// made for the machine that wrote it: it is checked to be this machine's before it runs).
    pub fn bundled_program(&self, program: &str) -> Option<&FileEntry> {
        let own = format!("bundle/{}/{program}", std::env::consts::ARCH);
        let flat = format!("bundle/{program}");
        let find = |path: &str| self.files.iter().find(|f| f.path == path);
        find(&own).or_else(|| find(&flat))
    }

    /// A manifest read from a copy that parses and describes the set of this name; `None`
    /// for anything else (unreadable, unsafe, or another set's).
    pub fn parse_for(bytes: &[u8], name: &str) -> Option<Manifest> {
        let m = Manifest::parse(std::str::from_utf8(bytes).ok()?).ok()?;
        (m.set.name == name).then_some(m)
    }

    /// Parse a manifest read from a copy. A copy is untrusted input: paths that could point
    /// outside the set are refused.
    pub fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest =
            toml::from_str(text).map_err(|e| Error::Failed(format!("invalid {MANIFEST}: {e}")))?;
        if m.format > FORMAT {
            return Err(Error::Failed(format!(
                "{MANIFEST} has format {} but this darvault reads up to {FORMAT}: upgrade darvault",
                m.format
            )));
        }
        let par2_names = m
            .par2
            .iter()
            .flat_map(|g| g.covers.iter().chain([&g.index]));
        if let Some(bad) = par2_names.into_iter().find(|p| !is_safe_relative(p)) {
            return Err(Error::Failed(format!(
                "{MANIFEST} lists an unsafe PAR2 path {bad:?}: refusing it"
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(m.files.len());
        for f in &m.files {
            if !is_safe_relative(&f.path) || f.path == MANIFEST || f.path == SHA256SUMS {
                return Err(Error::Failed(format!(
                    "{MANIFEST} lists an unsafe path {:?}: refusing it",
                    f.path
                )));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(Error::Failed(format!(
                    "{MANIFEST} lists {:?} twice: refusing it",
                    f.path
                )));
            }
            if f.size > MAX_FILE_SIZE {
                return Err(Error::Failed(format!(
                    "{MANIFEST} gives {:?} an impossible size ({} bytes): refusing it",
                    f.path, f.size
                )));
            }
            if let Some(parts) = &f.parts
                && !parts.fit(f.size)
            {
                return Err(Error::Failed(format!(
                    "{MANIFEST} gives {:?} parts that do not cut its {} bytes: refusing it",
                    f.path, f.size
                )));
            }
        }
        Ok(m)
    }

    pub fn read(set_dir: &Path) -> Result<Manifest> {
        let p = set_dir.join(MANIFEST);
        let text = std::fs::read_to_string(&p).map_err(Error::io("cannot read", &p))?;
        Manifest::parse(&text)
    }

    /// Write MANIFEST.toml, then SHA256SUMS over every file and the manifest itself.
    /// Returns the SHA-256 of MANIFEST.toml (what a later set records as its base).
    pub fn write(&self, set_dir: &Path) -> Result<String> {
        let text = self.to_toml();
        let manifest_sha = crate::hashing::sha256_hex(text.as_bytes());
        write_synced(&set_dir.join(MANIFEST), text.as_bytes())?;
        write_synced(
            &set_dir.join(SHA256SUMS),
            self.sums_text(&manifest_sha).as_bytes(),
        )?;
        Ok(manifest_sha)
    }

    /// The exact SHA256SUMS of this set, given the SHA-256 of its MANIFEST.toml: derivable,
    /// so a damaged SHA256SUMS can be rewritten from an intact manifest.
    pub fn sums_text(&self, manifest_sha: &str) -> String {
        let mut sums = String::new();
        for f in &self.files {
            sums.push_str(&sums_line(&f.sha256, &f.path));
        }
        sums.push_str(&sums_line(manifest_sha, MANIFEST));
        sums
    }

    pub fn slices(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.iter().filter(|f| f.role == Role::Slice)
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The SHA-256 a SHA256SUMS text records for MANIFEST.toml, if it is readable.
pub fn manifest_sha_in_sums(sums: &str) -> Option<&str> {
    sums.lines()
        .find_map(|l| l.strip_suffix(&format!("  {MANIFEST}")))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One `sha256sum` line. Names with a newline or backslash use the escaped form coreutils
/// reads (a leading backslash), so `sha256sum -c` accepts every name.
fn sums_line(sha: &str, path: &str) -> String {
    if path.contains(['\n', '\\']) {
        let escaped = path.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{sha}  {escaped}\n")
    } else {
        format!("{sha}  {path}\n")
    }
}

/// A relative '/'-separated path with no `..`, no empty or `.` parts and no leading '/'.
pub fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(Error::io("cannot create", path))?;
    f.write_all(bytes)
        .map_err(Error::io("cannot write", path))?;
    f.sync_all().map_err(Error::io("cannot sync", path))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            darvault_version: "0.1.0".into(),
            set: SetInfo {
                name: "docs_DIFF_2026-01-02_030405".into(),
                definition: "docs".into(),
                level: Level::Diff,
                created: "2026-01-02T02:04:05Z".parse().unwrap(),
                host: "box".into(),
                chain: vec!["docs_FULL_2026-01-01_030405".into()],
                base: Some(BaseRef {
                    name: "docs_FULL_2026-01-01_030405".into(),
                    manifest_sha256: "ab".repeat(32),
                }),
            },
            archive: ArchiveInfo {
                basename: "docs_DIFF_2026-01-02_030405".into(),
                slices: 1,
                slice_size: 1 << 30,
                compression: "zstd:3".into(),
                encrypted: false,
                catalogue: "docs_DIFF_2026-01-02_030405.catalog".into(),
                saved_files: 3,
            },
            tools: ToolVersions {
                dar: "2.7.8".into(),
                par2: "par2cmdline-turbo 1.4.0".into(),
            },
            checks: Checks {
                dar_test: "passed".into(),
                restore_test: RestoreTestRecord {
                    outcome: RestoreTestOutcome::Passed,
                    eligible: 3,
                    compared: 3,
                    changed_since: 0,
                    partial: None,
                },
                warnings: 0,
                par2_verify: None,
                not_saved: Vec::new(),
            },
            definition: None,
            par2: crate::tools::par2::Layout::new(1 << 30, 5, 64 << 20).plan(
                "docs_DIFF_2026-01-02_030405",
                &[("docs_DIFF_2026-01-02_030405.1.dar".into(), 42)],
                &[],
            ),
            files: vec![FileEntry {
                path: "docs_DIFF_2026-01-02_030405.1.dar".into(),
                size: 42,
                sha256: "cd".repeat(32),
                role: Role::Slice,
                parts: None,
            }],
        }
    }

    #[test]
    fn bundled_programs_are_found_per_machine_and_in_older_flat_bundles() {
        let entry = |path: &str| FileEntry {
            path: path.into(),
            size: 1,
            sha256: "ef".repeat(32),
            role: Role::Bundle,
            parts: None,
        };
        let this = std::env::consts::ARCH;
        let other = if this == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let mut m = sample();
        assert!(!m.carries_tools());
        assert!(m.bundled_program("dar_static").is_none());
        // Only the other machine's tools: carried, but none for this machine.
        m.files.push(entry(&format!("bundle/{other}/dar_static")));
        assert!(m.carries_tools());
        assert!(m.bundled_program("dar_static").is_none());
        m.files.push(entry(&format!("bundle/{this}/dar_static")));
        assert_eq!(
            m.bundled_program("dar_static").unwrap().path,
            format!("bundle/{this}/dar_static")
        );
        // A bundle made before tools were carried per machine.
        let mut flat = sample();
        flat.files.push(entry("bundle/dar_static"));
        assert!(flat.carries_tools());
        assert_eq!(
            flat.bundled_program("dar_static").unwrap().path,
            "bundle/dar_static"
        );
        // A dar_static deeper down is no bundle's.
        let mut deep = sample();
        deep.files.push(entry("bundle/a/b/dar_static"));
        assert!(!deep.carries_tools());
    }

    #[test]
    fn parses_back_into_the_same_values() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
    }

    #[test]
    fn a_format_1_manifest_still_reads() {
        let mut m = sample();
        m.format = 1;
        let text = m.to_toml();
        assert!(
            !text.contains("[definition]"),
            "format 1 had no definition table"
        );
        let read = Manifest::parse(&text).unwrap();
        assert_eq!(read.format, 1);
        assert!(read.definition.is_none());
    }

    #[test]
    fn parts_read_back_and_must_cut_their_file() {
        let mut m = sample();
        m.files[0].size = 40;
        m.files[0].parts = Some(PartDigests {
            size: 16,
            sha256: vec!["ab".repeat(32); 3],
        });
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
        let crafted = [
            (16, 2, "ab".repeat(32)),
            (0, 3, "ab".repeat(32)),
            (16, 3, "x".repeat(64)),
        ];
        for (size, count, digest) in crafted {
            m.files[0].parts = Some(PartDigests {
                size,
                sha256: vec![digest; count],
            });
            assert!(Manifest::parse(&m.to_toml()).is_err(), "{size} {count}");
        }
    }

    #[test]
    fn refuses_paths_outside_the_set() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "a//b", "./a"] {
            let mut m = sample();
            m.files[0].path = bad.into();
            assert!(Manifest::parse(&m.to_toml()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sums_lines_escape_newlines() {
        assert_eq!(sums_line("00", "a\nb"), "\\00  a\\nb\n");
        assert_eq!(sums_line("00", "a b"), "00  a b\n");
    }
}
