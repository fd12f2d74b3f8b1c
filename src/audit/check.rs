//! Proving the sets of one copy: discovery, the manifest, every file's size and SHA-256, the
//! derivable SHA256SUMS, stray files; repairs and deep checks where asked.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::repair;
use super::{CopyReport, FileReport, Options, SetReport, Status};
use crate::config::Config;
use crate::copy::{Store, folders_above, inside};
use crate::error::{Error, Reach, Result};
use crate::hashing::sha256_hex;
use crate::parallel::Bounded;
use crate::printable;
use crate::progress::{Progress, Task};
use crate::set::manifest::{FileEntry, manifest_sha_in_sums};
use crate::set::{MANIFEST, Manifest, Role, SHA256SUMS, SetName, WRITING, staging};
use crate::state::State;

#[allow(clippy::too_many_arguments)]
pub(super) async fn audit_copy(
    copy: &Arc<Store>,
    others: &[Arc<Store>],
    config: Option<&Config>,
    options: &Options,
    written: bool,
    state: &State,
    progress: &dyn Progress,
    report: &mut CopyReport,
) -> Result<bool> {
    let entries = entries_inside(copy, report).await?;
    let files: BTreeSet<&str> = entries
        .iter()
        .filter(|e| !e.1)
        .map(|e| e.0.as_str())
        .collect();
    let set_dirs = set_folders(&entries, &files, report);
    let holds_sets = !set_dirs.is_empty();
    let present: HashSet<String> = set_dirs
        .iter()
        .map(|d| d.rsplit('/').next().unwrap_or(d).to_owned())
        .collect();
    // Each file under the set folders above it, found by looking up its few ancestors, not
    // by comparing every file with every set (that grew with their product: seconds at
    // thousands of sets).
    let mut in_set: HashMap<&str, Vec<&str>> = HashMap::new();
    for &file in &files {
        for dir in folders_above(file).filter(|d| set_dirs.contains(*d)) {
            in_set.entry(dir).or_default().push(inside(dir, file));
        }
    }
    let selected = selected_sets(copy, set_dirs, options, state)?;
    copy.read_back(super::budget::due(copy, config, state, &selected)?);
    let task: Arc<dyn Task> = Arc::from(progress.start(&format!("audit {}", copy.name), None));
    for dir in selected {
        let in_dir = in_set.remove(dir.as_str()).unwrap_or_default();
        if let Some(problem) = not_a_set_yet(&dir, &in_dir, written) {
            report.problems.push(problem);
            continue;
        }
        let set = match audit_set(copy, others, &dir, &in_dir, config, options, state, &task).await
        {
            Ok(set) => set,
            // The copy itself failing (a broken connection, a server that stopped answering)
            // is the copy's error: no verdict on sets that were not read.
            Err(e) if e.reach() > Reach::Item => return Err(e),
            // Whatever else went wrong inside one set is that set's verdict; the others go on.
            Err(e) => could_not_audit(copy, &dir, e),
        };
        let damaged: Vec<&str> = set.files.iter().map(|f| f.path.as_str()).collect();
        super::budget::note_read(copy, state, &dir, &set.set, &damaged)?;
        let proven = matches!(set.status, Status::Ok | Status::Repaired);
        state.audited(&copy.name, &set.set, set.status.as_str(), proven)?;
        report.sets.push(set);
    }
    let deleted = deleted_sets(copy, others, config, options, state, &task, &present).await?;
    for set in deleted {
        let proven = matches!(set.status, Status::Ok | Status::Repaired);
        state.audited(&copy.name, &set.set, set.status.as_str(), proven)?;
        report.sets.push(set);
    }
    mark_broken_chains(&present, report);
    Ok(holds_sets)
}

/// The sets deleted from a copy that keeps their older versions (not by darvault): named,
/// or with --repair brought back from those versions and proven.
async fn deleted_sets(
    copy: &Arc<Store>,
    others: &[Arc<Store>],
    config: Option<&Config>,
    options: &Options,
    state: &State,
    task: &Arc<dyn Task>,
    present: &HashSet<String>,
) -> Result<Vec<SetReport>> {
    let mut reports = Vec::new();
    for (dir, removal_recorded) in copy.deleted_sets().await? {
        let name = set_name(copy, &dir);
        let definition = dir.split('/').next().unwrap_or_default();
        let chosen =
            options.definitions.is_empty() || options.definitions.iter().any(|d| d == definition);
        if present.contains(&name) || !chosen {
            continue;
        }
        // Cleanup's record on the copy is believed only where this machine does not know
        // the set as sent there and never removed (its cleanup forgets what it removes):
        // whoever deletes a set can write that record first.
        if removal_recorded && !state.was_replicated(&copy.name, &name)? {
            continue;
        }
        let found = "deleted: the copy keeps its older versions";
        if !options.repair {
            let found = format!("{found} (audit --repair brings the set back from them)");
            reports.push(verdict_of_set(
                copy,
                &dir,
                crate::set::MANIFEST,
                found,
                Status::DamagedRepairable,
            ));
            continue;
        }
        let set = match super::history::bring_back_set(copy, &dir, state).await {
            Ok(brought) => {
                let listed = copy.walk(&dir).await?;
                let prefix = format!("{dir}/");
                let in_dir: Vec<&str> = listed
                    .iter()
                    .filter(|(_, is_dir)| !is_dir)
                    .filter_map(|(p, _)| p.strip_prefix(&prefix))
                    .collect();
                let audited =
                    audit_set(copy, others, &dir, &in_dir, config, options, state, task).await;
                audited.map(|mut set| {
                    set.status = set.status.max(Status::Repaired);
                    set.files.insert(
                        0,
                        FileReport {
                            path: String::new(),
                            found: found.into(),
                            status: Status::Repaired,
                            repaired_from: Some(format!(
                                "its own older versions ({brought} files)"
                            )),
                        },
                    );
                    set
                })
            }
            Err(e) => Err(e),
        };
        match set {
            Ok(set) => reports.push(set),
            Err(e) if e.reach() > Reach::Item => return Err(e),
            Err(e) => reports.push(could_not_audit(copy, &dir, e)),
        }
    }
    Ok(reports)
}

/// Every file and folder of the copy, but its symbolic links and what lies below them: a
/// copy is read only inside its own folder, so a link (to a set, a folder, a file) is
/// reported and neither followed nor read.
async fn entries_inside(copy: &Store, report: &mut CopyReport) -> Result<Vec<(String, bool)>> {
    let mut entries = copy.walk("/").await?;
    let links = copy
        .links_among(entries.iter().map(|(p, _)| p.clone()).collect())
        .await?;
    for link in &links {
        report.problems.push(format!(
            "{}: a symbolic link (refused: a copy is read only inside its own folder)",
            printable(link)
        ));
    }
    let refused: HashSet<&str> = links.iter().map(String::as_str).collect();
    entries.retain(|(p, _)| {
        !refused.contains(p.as_str()) && !folders_above(p).any(|d| refused.contains(d))
    });
    Ok(entries)
}

/// The folders that hold a set (a manifest, or a set's name), reporting staging leftovers and
/// stray files on the way.
fn set_folders(
    entries: &[(String, bool)],
    files: &BTreeSet<&str>,
    report: &mut CopyReport,
) -> BTreeSet<String> {
    // A manifest inside a hidden folder (a killed backup's `.staging.*`, a repair's scratch)
    // is not a set's: those folders are darvault's own unfinished work.
    let mut set_dirs: BTreeSet<String> = files
        .iter()
        .filter(|p| **p == MANIFEST || p.ends_with(&format!("/{MANIFEST}")))
        .map(|p| parent(p).to_owned())
        .filter(|dir| !dir.split('/').any(|part| part.starts_with('.')))
        .collect();
    for (path, is_dir) in entries {
        let name = path.rsplit('/').next().unwrap_or(path);
        if *is_dir && staging::is_staging(name) {
            report.problems.push(format!(
                "{path}: unfinished set (staging leftover), not a set"
            ));
        } else if *is_dir && name.parse::<SetName>().is_ok() && !set_dirs.contains(path.as_str()) {
            // Looks like a set but has no manifest: damaged, or an interrupted copy.
            set_dirs.insert(path.clone());
        } else if !*is_dir
            && !path.split('/').any(|c| c.starts_with('.'))
            && !folders_above(path).any(|d| set_dirs.contains(d))
            && !holds_a_set(&set_dirs, path)
        {
            report
                .problems
                .push(format!("{path}: stray file, not part of any set"));
        }
    }
    set_dirs
}

/// The set folders this audit looks at (its definitions, its portion), oldest-proven first
/// (never proven before all), so that an interrupted audit still progresses.
fn selected_sets(
    copy: &Store,
    set_dirs: BTreeSet<String>,
    options: &Options,
    state: &State,
) -> Result<Vec<String>> {
    let mut selected: Vec<(Option<String>, String)> = Vec::new();
    for dir in set_dirs {
        let name = dir.rsplit('/').next().unwrap_or(&dir).to_owned();
        let definition = name.parse::<SetName>().ok().map(|n| n.definition);
        if !options.definitions.is_empty()
            && !definition
                .as_ref()
                .is_some_and(|d| options.definitions.contains(d))
        {
            continue;
        }
        if options.portion.is_some_and(|p| !p.includes(&name)) {
            continue;
        }
        selected.push((state.last_proven(&copy.name, &name)?, dir));
    }
    selected.sort();
    Ok(selected.into_iter().map(|(_, dir)| dir).collect())
}

/// Why the set folder `dir`, holding `in_dir`, is not a set to prove now (work under way or
/// left unfinished, which is not damage), if it is not.
fn not_a_set_yet(dir: &str, in_dir: &[&str], written: bool) -> Option<String> {
    if in_dir.contains(&crate::set::REMOVING) {
        // Being removed by cleanup: not a set, and never healed back into one.
        return Some(crate::copy::removal_in_progress(&printable(dir)));
    }
    let under_way = written
        || in_dir.contains(&WRITING)
        || in_dir.iter().any(|f| f.ends_with(crate::copy::PARTIAL));
    if !in_dir.contains(&MANIFEST) && under_way {
        // Its manifest comes last: a set being copied here (or whose copy was cut short,
        // which the next replicate finishes) is not damage.
        return Some(format!(
            "{}: being written (in progress, or cut short: the next replicate finishes it), not a set yet",
            printable(dir)
        ));
    }
    // Nothing to prove and nothing lost: the end of a removal or the start of a copy.
    in_dir
        .is_empty()
        .then(|| crate::copy::empty_set_folder(&printable(dir)))
}

/// A set whose chain needs a set that is not on the copy, or that cannot be repaired, can no
/// longer be restored from this copy: say which.
fn mark_broken_chains(present: &HashSet<String>, report: &mut CopyReport) {
    let unusable: HashSet<String> = report
        .sets
        .iter()
        .filter(|s| s.status == Status::Unrepairable)
        .map(|s| s.set.clone())
        .collect();
    for set in &mut report.sets {
        let missing: Vec<&str> = set
            .chain
            .iter()
            .filter(|c| !present.contains(*c) || unusable.contains(*c))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            set.chain_broken = Some(format!(
                "cannot be restored from this copy: it needs {} (missing or unrepairable)",
                missing.join(", ")
            ));
        }
    }
}

/// The verdict of a set whose audit itself failed.
fn could_not_audit(copy: &Store, location: &str, e: Error) -> SetReport {
    let found = format!("could not be audited: {e}");
    verdict_of_set(copy, location, "", found, Status::Unrepairable)
}

/// A set at `location` judged as a whole, without its files checked: `found` of `path`.
fn verdict_of_set(
    copy: &Store,
    location: &str,
    path: &str,
    found: String,
    status: Status,
) -> SetReport {
    SetReport {
        set: set_name(copy, location),
        location: location.to_owned(),
        status,
        files: vec![FileReport {
            path: path.to_owned(),
            found,
            status,
            repaired_from: None,
        }],
        files_checked: 0,
        bytes_checked: 0,
        deep: Vec::new(),
        chain: Vec::new(),
        chain_broken: None,
    }
}

/// The name of the set at `location`: its folder's name (the copy's own folder when the copy
/// is one set's folder).
fn set_name(copy: &Store, location: &str) -> String {
    match location.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => copy.folder_name().unwrap_or_default(),
    }
}

/// Whether a set folder lies under `path` (an object store may hold an object where another's
/// folder is): the first folder at or after `path/` in order tells.
fn holds_a_set(set_dirs: &BTreeSet<String>, path: &str) -> bool {
    let below = format!("{path}/");
    set_dirs
        .range(below.clone()..)
        .next()
        .is_some_and(|d| d.starts_with(&below))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// Join a set-relative path to the set's location on the copy.
fn at(location: &str, path: &str) -> String {
    if location.is_empty() {
        path.to_owned()
    } else {
        format!("{location}/{path}")
    }
}

#[allow(clippy::too_many_arguments)]
async fn audit_set(
    copy: &Arc<Store>,
    others: &[Arc<Store>],
    location: &str,
    in_dir: &[&str],
    config: Option<&Config>,
    options: &Options,
    state: &State,
    task: &Arc<dyn Task>,
) -> Result<SetReport> {
    let name = set_name(copy, location);
    let mut report = SetReport {
        set: name.clone(),
        location: location.to_owned(),
        status: Status::Ok,
        files: Vec::new(),
        files_checked: 0,
        bytes_checked: 0,
        deep: Vec::new(),
        chain: Vec::new(),
        chain_broken: None,
    };
    let sums = copy
        .read_small(&at(location, SHA256SUMS))
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let recorded = sums
        .as_deref()
        .and_then(manifest_sha_in_sums)
        .map(str::to_owned);

    // The manifest: trusted when it parses, names this set and matches SHA256SUMS.
    let Some((manifest, manifest_sha, heal_manifest)) = trusted_manifest(
        copy,
        others,
        location,
        &name,
        recorded.as_deref(),
        &mut report,
    )
    .await?
    else {
        report.status = Status::Unrepairable;
        return Ok(report);
    };

    report.chain = manifest.set.chain.clone();

    let early_deep = options
        .deep
        .then(|| early_deep_checks(copy, location, &manifest, config))
        .flatten();

    // Every file: size and SHA-256, a few at a time.
    let hashed = hash_files(copy, location, &manifest, &manifest_sha, task, &mut report).await;
    let early_deep = match early_deep {
        Some(running) => Some(running.await.expect("deep checks thread")),
        None => None,
    };
    let damaged = hashed?;

    report_strays(&manifest, in_dir, &mut report);
    if in_dir.contains(&WRITING) {
        finished_copy(copy, location, options.repair, &mut report).await?;
    }
    if !damaged.is_empty() {
        let fixed = repair::repair_files(
            copy,
            others,
            location,
            &manifest,
            &damaged,
            options.repair,
            config,
        )
        .await?;
        record_repairs(copy, state, fixed, &mut report)?;
    }
    // The descriptors go last, as when a set is published or replicated: only over a set
    // whose data is all there, so a folder an interrupted copy left never becomes a "set".
    let roles = Roles::of(&manifest);
    let data_whole = !report.files.iter().any(|f| {
        matches!(f.status, Status::DamagedRepairable | Status::Unrepairable)
            && roles.is_data(&f.path)
    });
    let descriptors = Descriptors {
        copy,
        state,
        location,
        writable: options.repair && data_whole,
    };
    descriptors
        .sums(&manifest, &manifest_sha, sums.as_deref(), &mut report)
        .await?;
    if let Some(heal) = heal_manifest {
        descriptors.manifest(heal, data_whole, &mut report).await?;
    }
    report.status = verdict(&roles, &report.files);

    if options.deep && report.status <= Status::Repaired {
        report.deep = match early_deep {
            Some(lines) if report.status == Status::Ok => lines?,
            _ => repair::deep_checks(copy, location, &manifest, config).await?,
        };
        if report
            .deep
            .iter()
            .any(|d| d.verdict == super::DeepVerdict::Failed)
        {
            report.status = Status::Unrepairable;
        }
    }
    Ok(report)
}

/// On a folder, the deep checks start with the hashing and read the files with it (one read
/// from disk for both); their verdict stands only if the hashing then finds every file
/// intact, else they run again on the repaired files (or not at all). A passphrase that
/// cannot be had now is said by the deep checks proper, later.
fn early_deep_checks(
    copy: &Store,
    location: &str,
    manifest: &Manifest,
    config: Option<&Config>,
) -> Option<tokio::task::JoinHandle<Result<Vec<super::DeepCheck>>>> {
    let dir = copy.in_place(location)?;
    let checks = repair::DeepChecks::new(dir, manifest, config, copy.tool_stall()).ok()?;
    Some(tokio::task::spawn_blocking(move || checks.run()))
}

/// The record of a copy that was cut short after the manifest it ends with: the set is
/// complete (proven like any other); the record is named, and removed by a repair.
async fn finished_copy(
    copy: &Store,
    location: &str,
    repair: bool,
    report: &mut SetReport,
) -> Result<()> {
    let found = if repair {
        copy.remove(&at(location, WRITING)).await?;
        "the record of a copy that finished (its manifest is here); removed"
    } else {
        "the record of a copy that finished (its manifest is here); audit --repair removes it"
    };
    report.files.push(FileReport {
        path: WRITING.into(),
        found: found.into(),
        status: Status::Ok,
        repaired_from: None,
    });
    Ok(())
}

/// Stray files inside the set folder (a par2 `.1` leftover, a partial upload): named, kept.
fn report_strays(manifest: &Manifest, in_dir: &[&str], report: &mut SetReport) {
    let listed: HashSet<&str> = manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain([MANIFEST, SHA256SUMS, WRITING])
        .collect();
    for f in in_dir.iter().filter(|f| !listed.contains(*f)) {
        report.files.push(FileReport {
            path: (*f).to_owned(),
            found: "stray file (not in the manifest); left in place".into(),
            status: Status::Ok,
            repaired_from: None,
        });
    }
}

/// What the repair of damaged files did, in the report and (each repair) in the state.
fn record_repairs(
    copy: &Store,
    state: &State,
    fixed: Vec<(FileEntry, String, repair::Outcome)>,
    report: &mut SetReport,
) -> Result<()> {
    for (entry, found, outcome) in fixed {
        if let repair::Outcome::Repaired { source, old_sha } = &outcome {
            state.repaired(
                &copy.name,
                &report.set,
                &entry.path,
                old_sha.as_deref(),
                &entry.sha256,
                source,
            )?;
        }
        let found = match outcome.reason() {
            Some(why) => format!("{found}; {why}"),
            None => found,
        };
        report.files.push(FileReport {
            path: entry.path.clone(),
            found,
            status: outcome.status(),
            repaired_from: outcome.source(),
        });
    }
    Ok(())
}

/// A set's SHA256SUMS and manifest: checked, and healed where `writable`.
struct Descriptors<'a> {
    copy: &'a Store,
    state: &'a State,
    location: &'a str,
    /// A repair was asked and the set's data is whole.
    writable: bool,
}

impl Descriptors<'_> {
    /// SHA256SUMS is derivable from an intact manifest.
    async fn sums(
        &self,
        manifest: &Manifest,
        manifest_sha: &str,
        sums: Option<&str>,
        report: &mut SetReport,
    ) -> Result<()> {
        let expected_sums = manifest.sums_text(manifest_sha);
        if sums == Some(expected_sums.as_str()) {
            return Ok(());
        }
        let found = if sums.is_none() { "missing" } else { "damaged" };
        let status = if self.writable {
            let path = at(self.location, SHA256SUMS);
            repair::put_bytes(self.copy, &path, expected_sums.as_bytes()).await?;
            self.state.repaired(
                &self.copy.name,
                &report.set,
                SHA256SUMS,
                sums.map(|s| sha256_hex(s.as_bytes())).as_deref(),
                &sha256_hex(expected_sums.as_bytes()),
                "manifest",
            )?;
            Status::Repaired
        } else {
            Status::DamagedRepairable
        };
        report.files.push(FileReport {
            path: SHA256SUMS.into(),
            found: found.into(),
            status,
            repaired_from: (status == Status::Repaired).then(|| "manifest".into()),
        });
        Ok(())
    }

    /// A manifest found good on another copy, written back here.
    async fn manifest(
        &self,
        heal: HealManifest,
        data_whole: bool,
        report: &mut SetReport,
    ) -> Result<()> {
        let status = if self.writable {
            repair::put_bytes(self.copy, &at(self.location, MANIFEST), &heal.bytes).await?;
            self.state.repaired(
                &self.copy.name,
                &report.set,
                MANIFEST,
                heal.old_sha.as_deref(),
                &sha256_hex(&heal.bytes),
                &heal.source,
            )?;
            Status::Repaired
        } else {
            Status::DamagedRepairable
        };
        let found = match (status, data_whole) {
            (Status::Repaired, _) | (_, true) => heal.found,
            _ => format!(
                "{}; not written back while files of the set are missing or damaged",
                heal.found
            ),
        };
        report.files.push(FileReport {
            path: MANIFEST.into(),
            found,
            status,
            repaired_from: (status == Status::Repaired).then(|| format!("copy {}", heal.source)),
        });
        Ok(())
    }
}

/// A set's verdict from its files': damage to the data (slices, catalogue, the manifest)
/// decides; damage only to PAR2 or bundle files that could not be healed leaves the data
/// intact and restorable ("redundancy damaged").
fn verdict(roles: &Roles, files: &[FileReport]) -> Status {
    let mut worst = Status::Ok;
    for f in files {
        let status = match f.status {
            Status::Unrepairable | Status::DamagedRepairable if !roles.is_data(&f.path) => {
                Status::RedundancyDamaged
            }
            s => s,
        };
        worst = worst.max(status);
    }
    worst
}

/// A manifest to write back (healed from another copy), once the set's data is whole.
struct HealManifest {
    bytes: Vec<u8>,
    source: String,
    old_sha: Option<String>,
    found: String,
}

/// The role of each of a set's files, looked up by path (a set may list many files).
struct Roles<'a>(HashMap<&'a str, &'a Role>);

impl<'a> Roles<'a> {
    fn of(manifest: &'a Manifest) -> Roles<'a> {
        Roles(
            manifest
                .files
                .iter()
                .map(|f| (f.path.as_str(), &f.role))
                .collect(),
        )
    }

    /// Whether `path` of a set is its data (slices, catalogue) or a descriptor.
    fn is_data(&self, path: &str) -> bool {
        path == MANIFEST
            || path == SHA256SUMS
            || self
                .0
                .get(path)
                .is_none_or(|role| matches!(role, Role::Slice | Role::Catalogue))
    }
}

/// The set's manifest and its SHA-256, and, when it was damaged or missing and another copy
/// holds it, the healthy one to write back (the caller writes it last).
#[allow(clippy::too_many_arguments)]
async fn trusted_manifest(
    copy: &Store,
    others: &[Arc<Store>],
    location: &str,
    name: &str,
    recorded: Option<&str>,
    report: &mut SetReport,
) -> Result<Option<(Manifest, String, Option<HealManifest>)>> {
    let bytes = copy.read_small(&at(location, MANIFEST)).await?;
    let parsed = bytes.as_deref().and_then(|b| Manifest::parse_for(b, name));
    let sha = bytes.as_deref().map(sha256_hex);
    match (&parsed, recorded) {
        (Some(m), Some(r)) if sha.as_deref() == Some(r) => {
            return Ok(Some((m.clone(), r.to_owned(), None)));
        }
        (Some(m), None) => return Ok(Some((m.clone(), sha.unwrap_or_default(), None))),
        _ => {}
    }
    // Damaged, missing, or at odds with SHA256SUMS: another copy may hold the true one.
    let healthy = repair::manifest_from_copies(others, location, name, recorded).await?;
    let found = if bytes.is_none() {
        "missing"
    } else {
        "damaged"
    };
    match healthy {
        Some((source, good)) => {
            let m = Manifest::parse_for(&good, name).expect("checked when found");
            let good_sha = sha256_hex(&good);
            let heal = HealManifest {
                bytes: good,
                source,
                old_sha: sha,
                found: found.into(),
            };
            Ok(Some((m, good_sha, Some(heal))))
        }
        // No other copy to arbitrate: a manifest that parses wins over SHA256SUMS (which is
        // then rewritten from it); one that does not parse cannot be trusted.
        None => match parsed {
            Some(m) => Ok(Some((m, sha.unwrap_or_default(), None))),
            None => {
                report.files.push(FileReport {
                    path: MANIFEST.into(),
                    found: found.into(),
                    status: Status::Unrepairable,
                    repaired_from: None,
                });
                Ok(None)
            }
        },
    }
}

/// Hash every file the manifest lists; returns the damaged or missing ones with what was found.
async fn hash_files(
    copy: &Arc<Store>,
    location: &str,
    manifest: &Manifest,
    manifest_sha: &str,
    task: &Arc<dyn Task>,
    report: &mut SetReport,
) -> Result<Vec<(FileEntry, String, Option<String>)>> {
    let mut damaged = Vec::new();
    // Where the server hashes files, it hashes the whole set in one go, but for those due
    // to be read back (the read budget).
    let (due, there): (Vec<&FileEntry>, Vec<&FileEntry>) = manifest
        .files
        .iter()
        .partition(|e| copy.is_due(&at(location, &e.path)));
    let paths: Vec<String> = there.iter().map(|e| at(location, &e.path)).collect();
    let anchor = at(location, MANIFEST);
    let found = copy.examine_there(&paths, (&anchor, manifest_sha)).await?;
    let mut to_read: Vec<FileEntry> = due.into_iter().cloned().collect();
    for (entry, found) in there.into_iter().zip(found) {
        let Some(found) = found else {
            to_read.push(entry.clone());
            continue;
        };
        task.advance(entry.size);
        report.files_checked += 1;
        report.bytes_checked += entry.size;
        if let Some((what, old_sha)) = judged(found, entry) {
            damaged.push((entry.clone(), what, old_sha));
        }
    }
    let mut running = Bounded::new(copy.readers);
    for entry in to_read {
        let (copy, task) = (Arc::clone(copy), Arc::clone(task));
        let path = at(location, &entry.path);
        running
            .spawn(async move {
                // Bytes are shown as they are read; what was not (a remote file, a missing
                // one) once the file is done.
                let told = std::sync::atomic::AtomicU64::new(0);
                let tell = |bytes: u64| {
                    told.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                    task.advance(bytes);
                };
                let found = examine(&copy, &path, &entry, &tell).await;
                let told = told.load(std::sync::atomic::Ordering::Relaxed);
                task.advance(entry.size.saturating_sub(told));
                (entry, found)
            })
            .await;
    }
    while let Some((entry, found)) = running.next().await {
        report.files_checked += 1;
        report.bytes_checked += entry.size;
        if let Some((what, old_sha)) = found? {
            damaged.push((entry, what, old_sha));
        }
    }
    damaged.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(damaged)
}

/// None when the file is intact, else what is wrong with it and the SHA-256 found.
async fn examine(
    copy: &Store,
    path: &str,
    entry: &FileEntry,
    told: &(dyn Fn(u64) + Sync),
) -> Result<Option<(String, Option<String>)>> {
    match copy.examine_told(path, Some(entry), told).await {
        Ok(found) => Ok(judged(found, entry)),
        Err(e) if e.reach() > Reach::Item => Err(e),
        // A directory where a file belongs, an unreadable file: that file's verdict.
        Err(e) => Ok(Some((format!("unreadable ({e})"), None))),
    }
}

/// What was found of a file, against its manifest entry: None when it is intact, else what
/// is wrong with it and the SHA-256 found.
fn judged(found: crate::copy::Examined, entry: &FileEntry) -> Option<(String, Option<String>)> {
    use crate::copy::Examined;
    match found {
        // A copy is untrusted: a symlink could point anywhere.
        Examined::Link => Some(("a symbolic link (refused)".into(), None)),
        Examined::Odd(kind) => Some((format!("{kind}, not a regular file (refused)"), None)),
        Examined::Hashed(None) => Some(("missing".into(), None)),
        Examined::Sized(size) => Some((
            format!(
                "damaged ({size} bytes, {} expected; not downloaded)",
                entry.size
            ),
            None,
        )),
        Examined::Hashed(Some((size, sha))) if size != entry.size => Some((
            format!("damaged ({size} bytes, {} expected)", entry.size),
            Some(sha),
        )),
        Examined::Hashed(Some((_, sha))) if sha != entry.sha256 => {
            Some(("damaged (SHA-256 differs)".into(), Some(sha)))
        }
        Examined::Hashed(Some(_)) => None,
    }
}
