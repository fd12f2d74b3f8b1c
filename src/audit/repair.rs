//! Repairs in place: from a healthy copy (exact, cheap), else PAR2 in a scratch directory.
//! Every result must match the manifest's SHA-256 before it replaces anything, and it is
//! written under a temporary name and moved into place (object stores replace atomically).
//! A slice rebuilt by PAR2 must also pass `dar -t` of the archive it belongs to: a manifest
//! and PAR2 that agree with each other but not with the archive (a set published by a
//! darvault before 0.2, or a crafted one) would otherwise "repair" a good slice into a bad one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{DeepCheck, DeepKind, DeepVerdict, Status};
use crate::config::Config;
use crate::copy::{Expected, Limiter, Store};
use crate::error::{Error, Result};
use crate::hashing::sha256_hex;
use crate::progress::Silent;
use crate::set::manifest::FileEntry;
use crate::set::{MANIFEST, Manifest, Role};
use crate::tools::dar::Dar;
use crate::tools::par2::{Group, Par2, Verdict};
use crate::tools::secret::Passphrase;

pub(super) enum Outcome {
    Repaired {
        source: String,
        old_sha: Option<String>,
    },
    Repairable,
    Unrepairable,
    /// A repair was made but could not be proven: the old file was kept. Says why.
    NotApplied(String),
}

impl Outcome {
    pub(super) fn status(&self) -> Status {
        match self {
            Outcome::Repaired { .. } => Status::Repaired,
            Outcome::Repairable => Status::DamagedRepairable,
            Outcome::Unrepairable | Outcome::NotApplied(_) => Status::Unrepairable,
        }
    }

    /// Why a repair was not applied, to add to what was found.
    pub(super) fn reason(&self) -> Option<&str> {
        match self {
            Outcome::NotApplied(why) => Some(why),
            _ => None,
        }
    }

    pub(super) fn source(&self) -> Option<String> {
        match self {
            Outcome::Repaired { source, .. } => Some(source.clone()),
            _ => None,
        }
    }
}

fn at(location: &str, path: &str) -> String {
    if location.is_empty() {
        path.to_owned()
    } else {
        format!("{location}/{path}")
    }
}

/// Where a set's file may be on another copy: the standard layout, or the same location.
fn candidates(manifest: &Manifest, location: &str, path: &str) -> Vec<String> {
    let standard = format!("{}/{}/{path}", manifest.set.definition, manifest.set.name);
    let same = at(location, path);
    if standard == same {
        vec![standard]
    } else {
        vec![standard, same]
    }
}

/// Repair (or, with `repair = false`, judge) the damaged files of a set.
/// `damaged` holds (entry, what was found, the SHA-256 found if any).
pub(super) async fn repair_files(
    copy: &Store,
    others: &[Arc<Store>],
    location: &str,
    manifest: &Manifest,
    damaged: &[(FileEntry, String, Option<String>)],
    repair: bool,
    config: Option<&Config>,
) -> Result<Vec<(FileEntry, String, Outcome)>> {
    let mut results = Vec::new();
    let for_par2 = from_copies(
        copy,
        others,
        location,
        manifest,
        damaged,
        repair,
        &mut results,
    )
    .await?;
    let set = SetAt {
        copy,
        location,
        manifest,
        config,
    };
    set.with_par2(&for_par2, repair, &mut results).await?;
    let judged: std::collections::HashSet<String> =
        results.iter().map(|(e, _, _)| e.path.clone()).collect();
    for (entry, found, _) in &for_par2 {
        if !judged.contains(&entry.path) {
            results.push(((*entry).clone(), (*found).clone(), Outcome::Unrepairable));
        }
    }
    results.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(results)
}

/// A damaged file, what was found, and the SHA-256 found if any.
type Damaged<'a> = (&'a FileEntry, &'a String, &'a Option<String>);

/// A damaged file, what was found, and what its repair did.
type Judged = (FileEntry, String, Outcome);

/// The damaged files a healthy copy holds, copied from it (or judged repairable); those it
/// cannot heal are returned, for PAR2.
async fn from_copies<'d>(
    copy: &Store,
    others: &[Arc<Store>],
    location: &str,
    manifest: &Manifest,
    damaged: &'d [(FileEntry, String, Option<String>)],
    repair: bool,
    results: &mut Vec<Judged>,
) -> Result<Vec<Damaged<'d>>> {
    let mut for_par2 = Vec::new();
    let folders: std::collections::HashSet<String> = copy
        .folders_among(damaged.iter().map(|d| at(location, &d.0.path)).collect())
        .await?
        .into_iter()
        .collect();
    for (entry, found, old_sha) in damaged {
        if folders.contains(&at(location, &entry.path)) {
            let why =
                "a folder stands where this file belongs: remove it, then audit --repair again";
            results.push((
                entry.clone(),
                found.clone(),
                Outcome::NotApplied(why.into()),
            ));
            continue;
        }
        // The copy's own history first: healed on the server, nothing downloaded.
        let here = at(location, &entry.path);
        if let Some(version) = copy.from_history(&here, entry, repair).await? {
            let outcome = match repair {
                true => Outcome::Repaired {
                    source: format!("its own older version {version}"),
                    old_sha: old_sha.clone(),
                },
                false => Outcome::Repairable,
            };
            results.push((entry.clone(), found.clone(), outcome));
            continue;
        }
        match healthy_source(others, manifest, location, entry).await? {
            Some((source, path)) => {
                let outcome = if repair {
                    copy_verified(&source, &path, copy, &at(location, &entry.path), entry).await?;
                    Outcome::Repaired {
                        source: format!("copy {}", source.name),
                        old_sha: old_sha.clone(),
                    }
                } else {
                    Outcome::Repairable
                };
                results.push((entry.clone(), found.clone(), outcome));
            }
            None => for_par2.push((entry, found, old_sha)),
        }
    }
    Ok(for_par2)
}

/// A set on a copy, for its PAR2 repair.
struct SetAt<'a> {
    copy: &'a Store,
    location: &'a str,
    manifest: &'a Manifest,
    config: Option<&'a Config>,
}

impl SetAt<'_> {
    /// The damaged files PAR2 heals (or, with `repair = false`, could heal).
    async fn with_par2(
        &self,
        for_par2: &[Damaged<'_>],
        repair: bool,
        results: &mut Vec<Judged>,
    ) -> Result<()> {
        let (copy, location, manifest, config) =
            (self.copy, self.location, self.manifest, self.config);
        // Which group each damaged file belongs to, looked up once (comparing every damaged
        // file with every group's file list grew with their product).
        let mut by_group: Vec<Vec<&(&FileEntry, &String, &Option<String>)>> =
            vec![Vec::new(); manifest.par2.len()];
        let groups = Groups::of(manifest);
        for damaged in for_par2 {
            if let Some(&g) = groups.files.get(damaged.0.path.as_str()) {
                by_group[g].push(damaged);
            }
        }
        // First par2 checks (and repairs) every group in a scratch folder of its own; then the
        // archive with every slice rebuilt, from all groups, is tested once by dar.
        let mut checked = Vec::new();
        for (g, (group, in_group)) in manifest.par2.iter().zip(by_group).enumerate() {
            if in_group.is_empty() {
                continue;
            }
            let scratch = copy.scratch("repair")?;
            let scratch_copy = Store::for_path(scratch.path())?;
            // Only PAR2 files of the group are damaged: the data they protect is proven, so the
            // PAR2 set is made again from it (byte-identical with the same engine).
            if in_group
                .iter()
                .all(|(e, _, _)| !groups.protects(g, &e.path))
            {
                let remade = match repair {
                    true => {
                        regenerate(copy, location, manifest, group, scratch.path(), config).await?
                    }
                    false => Err("data intact; audit --repair makes the PAR2 set again".into()),
                };
                for (entry, found, old_sha) in in_group {
                    let outcome = match &remade {
                        Ok(()) => {
                            let source = "par2 made again from the intact data";
                            put_back(&scratch_copy, copy, location, entry, old_sha, source).await?
                        }
                        Err(why) if !repair => Outcome::NotApplied(why.clone()),
                        Err(why) => Outcome::NotApplied(format!("{why}; the old file was kept")),
                    };
                    results.push(((*entry).clone(), (*found).clone(), outcome));
                }
                continue;
            }
            let verdict = par2_check(
                copy,
                location,
                manifest,
                group,
                scratch.path(),
                repair,
                config,
            )
            .await?;
            checked.push((g, group, scratch, scratch_copy, verdict, in_group));
        }
        let mut rebuilt = Rebuilt {
            copy,
            location,
            manifest,
            config,
            slices: std::collections::HashMap::new(),
            tested: std::sync::Mutex::new(None),
        };
        for (_, group, scratch, _, verdict, _) in &checked {
            if repair && matches!(verdict, Ok(Verdict::Intact)) {
                for source in &group.covers {
                    rebuilt
                        .slices
                        .insert(source.clone(), scratch.path().join(source));
                }
            }
        }
        for (g, _, _, scratch_copy, verdict, in_group) in &checked {
            for (entry, found, old_sha) in in_group {
                let outcome = match (repair, verdict) {
                    (_, Err(why)) => Outcome::NotApplied(why.clone()),
                    (true, Ok(Verdict::Intact)) if groups.protects(*g, &entry.path) => {
                        // par2 rebuilt it in scratch: it must be proven to go back.
                        match rebuilt.prove(entry).await? {
                            Err(why) => Outcome::NotApplied(why),
                            Ok(()) => {
                                put_back(scratch_copy, copy, location, entry, old_sha, "par2")
                                    .await?
                            }
                        }
                    }
                    (false, Ok(Verdict::Repairable)) if groups.protects(*g, &entry.path) => {
                        Outcome::Repairable
                    }
                    // Recovery volumes themselves are not rebuilt by par2: only a copy can heal them.
                    _ => Outcome::Unrepairable,
                };
                results.push(((*entry).clone(), (*found).clone(), outcome));
            }
        }
        Ok(())
    }
}

/// Put a file made (and proven) in scratch back onto the copy.
async fn put_back(
    scratch: &Store,
    copy: &Store,
    location: &str,
    entry: &FileEntry,
    old_sha: &Option<String>,
    source: &str,
) -> Result<Outcome> {
    copy_verified(
        scratch,
        &entry.path,
        copy,
        &at(location, &entry.path),
        entry,
    )
    .await?;
    Ok(Outcome::Repaired {
        source: source.into(),
        old_sha: old_sha.clone(),
    })
}

/// What par2 rebuilt in scratch folders, not yet put back.
struct Rebuilt<'a> {
    copy: &'a Store,
    location: &'a str,
    manifest: &'a Manifest,
    config: Option<&'a Config>,
    /// Every data file of a group par2 made whole: where it is in that group's scratch.
    slices: std::collections::HashMap<String, PathBuf>,
    /// `dar -t` of the archive with the rebuilt slices, once made (Err: why it failed).
    tested: std::sync::Mutex<Option<std::result::Result<(), String>>>,
}

impl Rebuilt<'_> {
    /// Ok(Ok) when `entry` as rebuilt matches the manifest and, for a slice, the archive with
    /// it passes `dar -t`; Ok(Err(why)) when it must not replace the file on the copy.
    async fn prove(&self, entry: &FileEntry) -> Result<std::result::Result<(), String>> {
        let not_applied = |why: String| Ok(Err(format!("{why}; the old file was kept")));
        let Some(path) = self.slices.get(&entry.path) else {
            return not_applied("par2 did not rebuild it".into());
        };
        let found = self.copy.hash_here(path).await;
        match found {
            Err(e @ (Error::Interrupted | Error::Stalled { .. })) => return Err(e),
            Ok((size, sha)) if size == entry.size && sha == entry.sha256 => {}
            Ok(_) => {
                return not_applied("par2 rebuilt it, but not to the manifest's SHA-256".into());
            }
            Err(e) => return not_applied(format!("par2 rebuilt nothing readable ({e})")),
        }
        if entry.role != Role::Slice {
            return Ok(Ok(()));
        }
        let known = self.tested.lock().expect("not poisoned").clone();
        let tested = match known {
            Some(tested) => tested,
            None => {
                let tested = self.test_archive().await?;
                *self.tested.lock().expect("not poisoned") = Some(tested.clone());
                tested
            }
        };
        Ok(tested.map_err(|why| format!("{why}; the old file was kept")))
    }

    /// `dar -t` of the archive with the slices par2 rebuilt: Ok(Err(why)) when it fails.
    async fn test_archive(&self) -> Result<std::result::Result<(), String>> {
        let not_applied = |why: String| Ok(Err(why));
        let key = match key_for(self.manifest, self.config)? {
            Some(key) => Some(key),
            None if self.manifest.archive.encrypted => {
                return not_applied(
                    "the rebuilt slice cannot be proven by dar -t: the archive is encrypted and \
                     no passphrase is configured for its definition"
                        .into(),
                );
            }
            None => None,
        };
        let (_folder, archive) = self.assemble().await?;
        let dar = machine_dar(
            configured_tools(self.config).0.as_deref(),
            self.copy.tool_stall(),
        )?;
        match tokio::task::block_in_place(|| dar.test(&archive, key.as_ref())) {
            Ok(_) => Ok(Ok(())),
            Err(e @ (Error::Interrupted | Error::Stalled { .. })) => Err(e),
            Err(e) => not_applied(format!(
                "par2 rebuilt it to the manifest's SHA-256, but dar -t of the archive with it \
                 fails ({e}): the manifest and PAR2 do not describe this archive"
            )),
        }
    }

    /// The archive with the rebuilt slices, in a scratch folder of its own: links to the
    /// slices in the groups' scratch folders (gathered and made whole by par2), else to the
    /// copy's own (a local copy) or downloads. The folder is returned to be kept until the
    /// test is done.
    async fn assemble(&self) -> Result<(crate::copy::Scratch, std::path::PathBuf)> {
        let scratch = self.copy.scratch("dar-test")?;
        let dir = scratch.path().to_owned();
        for slice in self.manifest.slices() {
            let target = dir.join(&slice.path);
            let Some(gathered) = self.slices.get(&slice.path) else {
                self.copy
                    .fetch(&at(self.location, &slice.path), &target)
                    .await?;
                continue;
            };
            let (from, to) = (gathered.clone(), target.clone());
            let linked = self.copy.on_disk("cannot link a slice", move || {
                from.is_file().then(|| link(&from, &to))
            })?;
            if let Some(linked) = linked {
                linked?;
            } else {
                self.copy
                    .fetch(&at(self.location, &slice.path), &target)
                    .await?;
            }
        }
        let archive = dir.join(&self.manifest.archive.basename);
        Ok((scratch, archive))
    }
}

fn link(source: &Path, target: &Path) -> Result<()> {
    std::os::unix::fs::symlink(source, target).map_err(Error::io("cannot link", target))
}

/// The passphrase of the set's definition, when it is encrypted and the config has one.
fn key_for(manifest: &Manifest, config: Option<&Config>) -> Result<Option<Passphrase>> {
    if !manifest.archive.encrypted {
        return Ok(None);
    }
    config
        .and_then(|c| {
            c.definitions
                .iter()
                .find(|d| d.name().as_str() == manifest.set.definition)
        })
        .and_then(|d| d.encryption.as_ref())
        .map(|e| Passphrase::resolve(e, &manifest.set.definition))
        .transpose()
}

/// The paths of dar and par2 under `[tools]`, if set.
fn configured_tools(config: Option<&Config>) -> (Option<PathBuf>, Option<PathBuf>) {
    let tools = config.map(|c| &c.tools);
    let path = |p: Option<&crate::config::AbsPath>| p.map(|p| p.path().to_owned());
    (
        path(tools.and_then(|t| t.dar.as_ref())),
        path(tools.and_then(|t| t.par2.as_ref())),
    )
}

/// This machine's par2 for a copy's files: the configured one, else the one on PATH (a
/// copy's bundled binaries are never run by an audit).
fn machine_par2(configured: Option<&Path>, io_stall: Option<Duration>) -> Result<Par2> {
    let mut par2 = Par2::locate(configured)?;
    par2.io_stall = io_stall;
    Ok(par2)
}

/// This machine's dar, the same way.
fn machine_dar(configured: Option<&Path>, io_stall: Option<Duration>) -> Result<Dar> {
    let mut dar = Dar::locate(configured)?;
    dar.io_stall = io_stall;
    Ok(dar)
}

/// par2's verdict on a group gathered into `scratch` (repaired there when `repair`), or why
/// it could not be had.
async fn par2_check(
    copy: &Store,
    location: &str,
    manifest: &Manifest,
    group: &Group,
    scratch: &Path,
    repair: bool,
    config: Option<&Config>,
) -> Result<std::result::Result<Verdict, String>> {
    match gather(copy, location, manifest, group, scratch).await {
        Ok(()) => {
            let par2 = machine_par2(configured_tools(config).1.as_deref(), copy.tool_stall())?;
            match tokio::task::block_in_place(|| par2.check(scratch, &group.index, repair)) {
                Ok(v) => Ok(Ok(v)),
                Err(e @ (Error::Interrupted | Error::Stalled { .. })) => Err(e),
                Err(e) => Ok(Err(format!("par2 could not check this group: {e}"))),
            }
        }
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(e) => Ok(Err(format!("the group could not be gathered: {e}"))),
    }
}

/// Which PAR2 group each of a set's files belongs to, by path: as a file it protects
/// (`sources`), or as one of the group's own files (`files`: sources, index and volumes).
/// Made once per set, in time linear in the manifest (a crafted one may list many groups).
struct Groups<'a> {
    files: std::collections::HashMap<&'a str, usize>,
    sources: std::collections::HashMap<&'a str, usize>,
}

impl<'a> Groups<'a> {
    fn of(manifest: &'a Manifest) -> Groups<'a> {
        use std::collections::HashMap;
        let mut files: HashMap<&str, usize> = HashMap::new();
        let mut sources: HashMap<&str, usize> = HashMap::new();
        let mut stems: HashMap<&str, usize> = HashMap::new();
        for (i, group) in manifest.par2.iter().enumerate() {
            for source in &group.covers {
                sources.entry(source.as_str()).or_insert(i);
                files.entry(source.as_str()).or_insert(i);
            }
            files.entry(group.index.as_str()).or_insert(i);
            stems
                .entry(group.index.trim_end_matches(".par2"))
                .or_insert(i);
        }
        for f in manifest.files.iter().filter(|f| f.role == Role::Par2) {
            let volume_of = f
                .path
                .strip_suffix(".par2")
                .and_then(|p| p.rsplit_once(".vol"))
                .and_then(|(stem, _)| stems.get(stem));
            if let Some(&i) = volume_of {
                files.entry(f.path.as_str()).or_insert(i);
            }
        }
        Groups { files, sources }
    }

    /// Whether `path` is a file group `i` protects.
    fn protects(&self, i: usize, path: &str) -> bool {
        self.sources.get(path) == Some(&i)
    }
}

fn is_group_source(group: &Group, path: &str) -> bool {
    group.covers.iter().any(|c| c == path)
}

/// The files a PAR2 group consists of: the files it protects, its index and its volumes.
fn group_files<'a>(manifest: &'a Manifest, group: &Group) -> Vec<&'a FileEntry> {
    let stem = group.index.trim_end_matches(".par2");
    manifest
        .files
        .iter()
        .filter(|f| {
            is_group_source(group, &f.path)
                || (f.role == Role::Par2
                    && (f.path == group.index
                        || (f.path.starts_with(&format!("{stem}.vol"))
                            && f.path.ends_with(".par2"))))
        })
        .collect()
}

/// Put a group's files into `scratch`: hard links for a local copy (par2 only reads them and
/// renames a damaged one away), downloads for a remote one. Missing files, and symbolic
/// links (never followed), stay missing.
async fn gather(
    copy: &Store,
    location: &str,
    manifest: &Manifest,
    group: &Group,
    scratch: &Path,
) -> Result<()> {
    gather_files(copy, location, &group_files(manifest, group), scratch).await
}

async fn gather_files(
    copy: &Store,
    location: &str,
    files: &[&FileEntry],
    scratch: &Path,
) -> Result<()> {
    for f in files {
        copy.fetch(&at(location, &f.path), &scratch.join(&f.path))
            .await?;
    }
    Ok(())
}

/// Make a group's PAR2 set again in `scratch` from the copy's (proven) data files; Ok when
/// every PAR2 file it made matches the manifest, Err(why) when not.
async fn regenerate(
    copy: &Store,
    location: &str,
    manifest: &Manifest,
    group: &Group,
    scratch: &Path,
    config: Option<&Config>,
) -> Result<std::result::Result<(), String>> {
    let sources: Vec<&FileEntry> = manifest
        .files
        .iter()
        .filter(|f| is_group_source(group, &f.path))
        .collect();
    gather_files(copy, location, &sources, scratch).await?;
    let par2 = machine_par2(configured_tools(config).1.as_deref(), copy.tool_stall())?;
    match tokio::task::block_in_place(|| par2.create(scratch, group)) {
        Err(e @ (Error::Interrupted | Error::Stalled { .. })) => return Err(e),
        Err(e) => return Ok(Err(format!("par2 could not make the PAR2 set again: {e}"))),
        Ok(()) => {}
    }
    for f in group_files(manifest, group)
        .into_iter()
        .filter(|f| f.role == Role::Par2)
    {
        let made = match copy.hash_here(&scratch.join(&f.path)).await {
            Err(e @ (Error::Interrupted | Error::Stalled { .. })) => return Err(e),
            made => made,
        };
        if !made.is_ok_and(|(size, sha)| size == f.size && sha == f.sha256) {
            return Ok(Err(format!(
                "the PAR2 set made again here ({}) differs from the one recorded ({}): the data is intact; another copy can heal the PAR2 files",
                par2.describe(),
                manifest.tools.par2
            )));
        }
    }
    Ok(Ok(()))
}

/// A copy (other than the one audited) holding this file intact.
async fn healthy_source(
    others: &[Arc<Store>],
    manifest: &Manifest,
    location: &str,
    entry: &FileEntry,
) -> Result<Option<(Arc<Store>, String)>> {
    for other in others {
        for path in candidates(manifest, location, &entry.path) {
            // A copy that cannot be read today is simply not a source.
            if let Ok(Some((size, sha))) = other.hash(&path).await
                && size == entry.size
                && sha == entry.sha256
            {
                return Ok(Some((Arc::clone(other), path)));
            }
        }
    }
    Ok(None)
}

/// Another copy's MANIFEST.toml for this set: the one SHA256SUMS records if it is known,
/// else any that parses and names the set. Returns (copy name, bytes).
pub(super) async fn manifest_from_copies(
    others: &[Arc<Store>],
    location: &str,
    name: &str,
    recorded: Option<&str>,
) -> Result<Option<(String, Vec<u8>)>> {
    let standard = name
        .parse::<crate::set::SetName>()
        .map(|n| format!("{}/{name}/{MANIFEST}", n.definition))
        .ok();
    for other in others {
        for path in standard.iter().cloned().chain([at(location, MANIFEST)]) {
            let Ok(Some(bytes)) = other.read_small(&path).await else {
                continue;
            };
            let fits = match recorded {
                Some(r) => sha256_hex(&bytes) == r,
                None => true,
            };
            if fits && Manifest::parse_for(&bytes, name).is_some() {
                return Ok(Some((other.name.clone(), bytes)));
            }
        }
    }
    Ok(None)
}

/// Before writing `path`: refuse when a folder on the way is a symbolic link; a link in the
/// file's own place is removed (never followed), so the file written there is a real one.
async fn replace_link(copy: &Store, path: &str) -> Result<()> {
    let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    copy.check_no_link(parent)?;
    copy.remove_link(path)
}

/// Write small bytes (a manifest, SHA256SUMS) in place, safely (see `copy_verified`).
pub(super) async fn put_bytes(copy: &Store, path: &str, bytes: &[u8]) -> Result<()> {
    replace_link(copy, path).await?;
    let mut file = tempfile::NamedTempFile::new()
        .map_err(|e| Error::Failed(format!("cannot make a scratch file: {e}")))?;
    std::io::Write::write_all(&mut file, bytes)
        .map_err(|e| Error::Failed(format!("cannot write a scratch file: {e}")))?;
    let sha256 = sha256_hex(bytes);
    let expected = Expected {
        size: bytes.len() as u64,
        sha256: &sha256,
        executable: false,
        part: None,
    };
    copy.put_file(
        file.path(),
        path,
        &expected,
        &Limiter::new(None),
        &Silent,
        false,
    )
    .await
}

/// Put `src_path` of one copy at `dst_path` on another: through the destination's own
/// writer (a temporary name moved into place once proven, never through a link, under the
/// stall deadline, WebDAV streamed), so only bytes that match the manifest entry replace
/// anything. A remote source is downloaded to a scratch file first.
async fn copy_verified(
    src: &Store,
    src_path: &str,
    dst: &Store,
    dst_path: &str,
    entry: &FileEntry,
) -> Result<()> {
    replace_link(dst, dst_path).await?;
    // The bundle's folders too: a copy may have lost a whole folder.
    dst.make_parent(dst_path).await?;
    let scratch;
    let in_place = match src.is_link(src_path)? {
        true => None,
        false => src.in_place(src_path),
    };
    let local = match in_place {
        Some(local) => local,
        None => {
            scratch = tempfile::Builder::new()
                .prefix("darvault-heal.")
                .tempdir()
                .map_err(|e| Error::Failed(format!("cannot make a scratch directory: {e}")))?;
            let local = scratch.path().join("file");
            src.download(src_path, &local).await?;
            local
        }
    };
    let expected = Expected {
        size: entry.size,
        sha256: &entry.sha256,
        executable: entry.is_program(),
        part: entry.parts.as_ref().map(|p| p.size),
    };
    dst.put_file(
        &local,
        dst_path,
        &expected,
        &Limiter::new(None),
        &Silent,
        false,
    )
    .await
}

/// `par2 verify` of every group and `dar -t` of the archive, on the copy's own bytes (a
/// remote copy is downloaded to a scratch directory first).
pub(super) async fn deep_checks(
    copy: &Store,
    location: &str,
    manifest: &Manifest,
    config: Option<&Config>,
) -> Result<Vec<DeepCheck>> {
    if let Some(dir) = copy.in_place(location) {
        let checks = DeepChecks::new(dir, manifest, config, copy.tool_stall())?;
        return tokio::task::block_in_place(|| checks.run());
    }
    let scratch = tempfile::Builder::new()
        .prefix("darvault-deep.")
        .tempdir()
        .map_err(|e| Error::Failed(format!("cannot make a scratch directory: {e}")))?;
    for f in &manifest.files {
        let target = scratch.path().join(&f.path);
        // The bundle's folders (bundle/, bundle/<machine>/).
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        }
        copy.download(&at(location, &f.path), &target).await?;
    }
    let checks = DeepChecks::new(scratch.path().to_owned(), manifest, config, None)?;
    tokio::task::block_in_place(|| checks.run())
}

/// The deep checks of one set whose files are in a local folder, owned so that they can run
/// on a thread of their own (beside the hashing of the same files, which then shares the
/// reads from disk).
pub(super) struct DeepChecks {
    dir: PathBuf,
    indexes: Vec<String>,
    archive: String,
    encrypted: bool,
    key: Option<Passphrase>,
    /// The folder is a copy's own (see `Store::tool_stall`).
    io_stall: Option<std::time::Duration>,
    /// The set's files, looked at before any tool opens them.
    files: Vec<String>,
    /// dar and par2 as configured (else found on PATH).
    tools: (Option<PathBuf>, Option<PathBuf>),
}

impl DeepChecks {
    pub(super) fn new(
        dir: PathBuf,
        manifest: &Manifest,
        config: Option<&Config>,
        io_stall: Option<std::time::Duration>,
    ) -> Result<Self> {
        Ok(DeepChecks {
            dir,
            io_stall,
            indexes: manifest.par2.iter().map(|g| g.index.clone()).collect(),
            archive: manifest.archive.basename.clone(),
            encrypted: manifest.archive.encrypted,
            key: key_for(manifest, config)?,
            files: manifest.files.iter().map(|f| f.path.clone()).collect(),
            tools: configured_tools(config),
        })
    }

    /// `par2 verify` of the groups one after another on one thread, `dar -t` on this one:
    /// par2 and dar each keep one core busy, so side by side they take the time of the longer.
    pub(super) fn run(&self) -> Result<Vec<DeepCheck>> {
        // par2 and dar open what they are given: a FIFO or a device there would hold them
        // (the hashing refuses it and says so; the tools then have nothing to add).
        let odd = self.files.iter().find(|f| {
            std::fs::symlink_metadata(self.dir.join(f)).is_ok_and(|m| !m.file_type().is_file())
        });
        if let Some(odd) = odd {
            return Ok(vec![DeepCheck {
                check: DeepKind::DarTest { dar: None },
                verdict: DeepVerdict::NotRun,
                detail: Some(format!("{odd} is not a regular file")),
            }]);
        }
        // This machine's own tools: a copy's bundled binaries are never run unverified.
        let par2 = machine_par2(self.tools.1.as_deref(), self.io_stall)?;
        let dar = machine_dar(self.tools.0.as_deref(), self.io_stall)?;
        let (verified, tested) = std::thread::scope(|scope| {
            let verifier = scope.spawn(|| self.verify(&par2));
            let tested = self.test(&dar);
            (verifier.join().expect("par2 verify thread"), tested)
        });
        let mut checks = verified?;
        checks.push(tested?);
        Ok(checks)
    }

    fn verify(&self, par2: &Par2) -> Result<Vec<DeepCheck>> {
        let mut checks = Vec::new();
        for index in &self.indexes {
            let check = DeepKind::Par2Verify {
                index: index.clone(),
            };
            checks.push(match par2.check(&self.dir, index, false) {
                Ok(Verdict::Intact) => DeepCheck::passed(check),
                Ok(v) => DeepCheck::failed(check, format!("{v:?}").to_lowercase()),
                Err(e @ (Error::Interrupted | Error::Stalled { .. })) => return Err(e),
                Err(e) => DeepCheck::failed(check, e.to_string()),
            });
        }
        Ok(checks)
    }

    fn test(&self, dar: &Dar) -> Result<DeepCheck> {
        if self.encrypted && self.key.is_none() {
            return Ok(DeepCheck {
                check: DeepKind::DarTest { dar: None },
                verdict: DeepVerdict::NotRun,
                detail: Some("encrypted, and no passphrase is configured for it".into()),
            });
        }
        let check = DeepKind::DarTest {
            dar: Some(dar.path.display().to_string()),
        };
        Ok(
            match dar.test(&self.dir.join(&self.archive), self.key.as_ref()) {
                Ok(_) => DeepCheck::passed(check),
                Err(e @ (Error::Interrupted | Error::Stalled { .. })) => return Err(e),
                // Not evidence against the archive: say so, do not cry wolf.
                Err(e @ Error::WrongPassphrase { .. }) => DeepCheck {
                    check,
                    verdict: DeepVerdict::NotRun,
                    detail: Some(e.to_string()),
                },
                Err(e) => DeepCheck::failed(check, e.to_string()),
            },
        )
    }
}

impl DeepCheck {
    fn passed(check: DeepKind) -> DeepCheck {
        DeepCheck {
            check,
            verdict: DeepVerdict::Passed,
            detail: None,
        }
    }

    fn failed(check: DeepKind, why: String) -> DeepCheck {
        DeepCheck {
            check,
            verdict: DeepVerdict::Failed,
            detail: Some(why),
        }
    }
}
