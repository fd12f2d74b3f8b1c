//! Make one archive set: `dar -c` (hashing each slice as soon as dar moves on to the next),
//! then `dar -t` and the restore test side by side, then the manifest, then publication.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::halves::Sizes;
use super::plan::Plan;
use super::restore_test::{self, Sampler};
use crate::config::{Architecture, Definition};
use crate::copy::LocalCopy;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::set::Level;
use crate::set::bundle::{self, RestoreText};
use crate::set::manifest::{
    ArchiveInfo, BaseRef, Checks, DefinitionRecord, FORMAT, FileEntry, NotSaved, RestoreTestRecord,
    SetInfo, ToolVersions,
};
use crate::set::seal::Seals;
use crate::set::staging::{self, Staging};
use crate::set::{Manifest, Role};
use crate::tools::Tools;
use crate::tools::dar::{CreateOptions, CreateReport, Dar};
use crate::tools::par2;
use crate::tools::process::check_stop;
use crate::tools::secret::Passphrase;

/// What a published set cost and holds.
#[derive(Debug, Serialize)]
pub struct SetReport {
    pub set: String,
    pub level: String,
    pub base: Option<String>,
    pub path: PathBuf,
    pub size: u64,
    pub slices: u32,
    pub saved_files: u64,
    pub seconds: f64,
    /// Wall time of each phase, in the order they started (some overlap).
    pub phases: Vec<(String, f64)>,
    /// CPU seconds (user and system) the set cost, and what spent them.
    pub cpu: Cpu,
    /// The options `dar -c` was given that decide what it saved and how (a `dar -c` by
    /// hand with them does the same work).
    pub dar_options: Vec<String>,
    pub restore_test: RestoreTestRecord,
    /// The chain's tools, when this set carries them (a FULL, or the first set after they
    /// changed): the machines they are carried for, and those left out.
    pub tools: Option<ToolsCarried>,
    /// Files dar could not save properly, and sampled files changed since the backup.
    pub warnings: Vec<String>,
}

/// The machines a set's bundle carries tools for, and the ones it leaves out.
#[derive(Debug, Serialize)]
pub struct ToolsCarried {
    /// As `uname -m` names them: the machines whose tools were found now (the bundle also
    /// holds a folder for each of `kept_from_older_set`).
    pub architectures: Vec<Architecture>,
    /// Machines whose tools were not found now (and why), carried again from an older set of
    /// the chain.
    pub kept_from_older_set: Vec<LeftOut>,
    pub left_out: Vec<LeftOut>,
}

/// A machine carried by default whose tools were not found.
#[derive(Debug, Serialize)]
pub struct LeftOut {
    pub architecture: Architecture,
    #[serde(flatten)]
    pub why: crate::tools::bundled::NotCarried,
}

impl LeftOut {
    fn of((architecture, why): &(Architecture, crate::tools::bundled::NotCarried)) -> LeftOut {
        LeftOut {
            architecture: *architecture,
            why: why.clone(),
        }
    }
}

impl ToolsCarried {
    /// What `manifest`'s bundle carries, with the tools found now (`carried`).
    fn of(carried: &crate::tools::bundled::Carried, manifest: &Manifest) -> ToolsCarried {
        let in_bundle = |a: Architecture| {
            let dar = format!("{}/{}/dar_static", bundle::DIR, a.as_str());
            manifest.files.iter().any(|f| f.path == dar)
        };
        let (kept, left_out): (Vec<_>, Vec<_>) =
            carried.missing.iter().partition(|(a, _)| in_bundle(*a));
        ToolsCarried {
            architectures: carried.architectures.iter().map(|a| a.arch).collect(),
            kept_from_older_set: kept.into_iter().map(LeftOut::of).collect(),
            left_out: left_out.into_iter().map(LeftOut::of).collect(),
        }
    }
}

/// CPU seconds of a set: darvault's and its children's together, and by what spent them
/// (each child program by its operation, darvault's own work by its job, and its rest).
#[derive(Debug, Serialize)]
pub struct Cpu {
    pub total_seconds: f64,
    pub by_phase: std::collections::BTreeMap<String, f64>,
}

impl Cpu {
    /// Start counting: what was counted before is dropped.
    fn start() -> (f64, f64) {
        crate::cpu::take();
        crate::cpu::process_and_children()
    }

    /// What was spent since `start`.
    fn since((own, children): (f64, f64)) -> Cpu {
        let mut by_phase = crate::cpu::take();
        let (own_now, children_now) = crate::cpu::process_and_children();
        let total_seconds = (own_now - own) + (children_now - children);
        let labelled: f64 = by_phase.values().sum();
        by_phase.insert(
            crate::cpu::OTHER.to_owned(),
            (total_seconds - labelled).max(0.0),
        );
        Cpu {
            total_seconds,
            by_phase,
        }
    }
}

pub struct Phases(Vec<(String, f64)>);

impl Phases {
    fn record(&mut self, name: &str, took: Duration) {
        self.0.push((name.to_owned(), took.as_secs_f64()));
    }
}

/// dar path masks for `exclude` (a mask without '/' matches a name at any depth) and `prune`.
pub fn prune_masks(definition: &Definition) -> Vec<String> {
    let mut masks = Vec::new();
    for m in &definition.exclude {
        masks.push(m.clone());
        if !m.contains('/') {
            masks.push(format!("*/{m}"));
        }
    }
    masks.extend(definition.prune.iter().map(|p| p.as_str().to_owned()));
    masks
}

/// What one set's making shares between its phases.
struct Making<'a> {
    definition: &'a Definition,
    plan: &'a Plan,
    tools: &'a Tools,
    key: Option<&'a Passphrase>,
    progress: &'a dyn Progress,
    staging: &'a Staging,
    archive: &'a Path,
    name: &'a str,
    /// When `dar -c` began.
    started: SystemTime,
}

/// What `dar -c` and the checks beside it produced: every check passed.
struct Checked {
    created: CreateReport,
    restore: restore_test::Outcome,
    files: Vec<FileEntry>,
    groups: Vec<par2::Group>,
    seals: Seals,
}

pub fn make_set(
    definition: &Definition,
    plan: Plan,
    repository: &LocalCopy,
    tools: &Tools,
    key: Option<&Passphrase>,
    progress: &dyn Progress,
) -> Result<SetReport> {
    let began = Instant::now();
    let cpu = Cpu::start();
    let definition_dir = &repository.definition_dir(definition.name().as_str());
    let mut phases = Phases(Vec::new());
    let name = plan.name.to_string();
    let staging = Staging::create(definition_dir, &name)?;
    let archive = staging.path().join(plan.name.archive_basename());
    let catalogue = staging.path().join(plan.name.catalogue_basename());
    let reference = base_catalogue(&plan)?;
    let include: Vec<String> = definition
        .include
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    let masks = prune_masks(definition);
    let compression = definition.compression.to_string();
    let comment = format!("darvault set {name}");
    let options = CreateOptions {
        archive: &archive,
        catalogue: &catalogue,
        reference: reference.as_deref(),
        source: definition.source.path(),
        compression: &compression,
        slice_size: definition.slice_size.0,
        include: &include,
        prune_masks: &masks,
        no_compress: &definition.no_compress,
        cache_directory_tagging: definition.cache_directory_tagging,
        extra: &definition.dar_options,
        comment: &comment,
        timeout: definition.timeout.0,
        key,
    };
    let making = Making {
        definition,
        plan: &plan,
        tools,
        key,
        progress,
        staging: &staging,
        archive: &archive,
        name: &name,
        started: SystemTime::now(),
    };
    let dar_options = crate::tools::dar::what_to_save(&options);
    let checked = making.create_and_check(&options, &mut phases)?;
    let par2_verified = making.verify_par2(&checked.groups, &mut phases)?;
    let t = Instant::now();
    let (manifest, warnings) =
        making.describe(definition_dir, repository, checked, par2_verified)?;
    let path = staging.publish()?;
    phases.record("manifest + publish", t.elapsed());
    let mut warnings = warnings;
    if let Some(dir) = &definition.par2_dir
        && let Err(e) =
            super::par2_dir::keep(dir.path(), definition.name().as_str(), &path, &manifest)
    {
        warnings.push(format!("PAR2 not kept in par2_dir: {e}"));
    }
    Ok(SetReport {
        set: name,
        level: plan.name.level.to_string(),
        base: plan.base.map(|b| b.manifest.set.name),
        path,
        size: manifest.total_size(),
        slices: manifest.archive.slices,
        saved_files: manifest.archive.saved_files,
        seconds: began.elapsed().as_secs_f64(),
        phases: phases.0,
        cpu: Cpu::since(cpu),
        dar_options,
        restore_test: manifest.checks.restore_test.clone(),
        tools: manifest
            .carries_tools()
            .then(|| ToolsCarried::of(&tools.bundle, &manifest)),
        warnings,
    })
}

/// The first slice of the base set's catalogue, for a DIFF or INCR.
fn base_catalogue(plan: &Plan) -> Result<Option<PathBuf>> {
    let Some(base) = &plan.base else {
        return Ok(None);
    };
    let cat = base.dir.join(&base.manifest.archive.catalogue);
    let first = slice_path(&cat, 1);
    if !first.is_file() {
        return Err(Error::Failed(format!(
            "the base set's catalogue {} is missing: cannot make a {} against it",
            first.display(),
            plan.name.level
        )));
    }
    Ok(Some(cat))
}

impl Making<'_> {
    /// dar -c, with the slices it has finished hashed (and, when large, protected by PAR2) on
    /// the side meanwhile. That work is provisional: dar may come back to a slice (see
    /// set::seal), so whatever it touched afterwards is redone once it has exited. Then
    /// dar -t, the listing + restore test, and the rest of the hashing and PAR2, side by side.
    fn create_and_check(&self, options: &CreateOptions, phases: &mut Phases) -> Result<Checked> {
        let (definition, staging, archive, name) =
            (self.definition, self.staging, self.archive, self.name);
        let layout = par2::Layout::new(
            definition.slice_size.0,
            redundancy(definition, self.plan.name.level),
            definition.par2_whole_slice_max.0,
        )
        .with_block(definition.par2_block_size.0);
        let t = Instant::now();
        let since = self
            .plan
            .base
            .as_ref()
            .map(|b| b.manifest.set.created.as_second());
        // A walk of the source only to show a total: none where nothing shows it.
        let total = match self.progress.shows_totals() {
            true => crate::cpu::on_this_thread("progress estimate (a walk of the source)", || {
                super::estimate::bytes_to_save(options.source, options.include, since)
            }),
            false => None,
        };
        let early = EarlyWork {
            archive,
            set_name: name,
            dir: staging.path(),
            layout: &layout,
        };
        let seals = Seals::watch(staging.path())?;
        let mut sizes = Sizes::default();
        let scratch = staging.scratch("restore-test")?;
        let dar_done = AtomicBool::new(false);
        let settled = Settled {
            archive,
            below: AtomicU32::new(1),
        };
        let outcome = std::thread::scope(|scope| {
            let (to_protect, asked) = std::sync::mpsc::channel();
            let par2 = &self.tools.par2;
            let protector = scope.spawn(|| protect(asked, staging.path(), par2));
            let worker = scope.spawn(|| early.run(seals, &settled, &dar_done, to_protect));
            let created = self.run_dar(options, total, &mut sizes, &settled);
            dar_done.store(true, Ordering::Relaxed);
            phases.record("dar -c", t.elapsed());
            let created = match created {
                Ok(created) => created,
                Err(e) => {
                    let _ = (worker.join(), protector.join());
                    return Err(e);
                }
            };
            // PAR2 is made before the checks have passed, but nothing is published unless
            // they all do.
            let checks = self
                .progress
                .start(&format!("{name}: dar -t, restore test, PAR2"), None);
            let tester = scope.spawn(|| {
                let t = Instant::now();
                crate::cpu::on_this_thread("dar -t, reading its output", || {
                    test_archive(&self.tools.dar, archive, self.key, &sizes)
                })
                .map(|_| t.elapsed())
            });
            let sampler = scope.spawn(|| self.restore_test(&scratch));
            let t = Instant::now();
            let early = worker.join().expect("slice worker");
            let protected = || protector.join().expect("PAR2 protector");
            let protected = early
                .and_then(|early| early.finish(&self.plan.name, par2, protected))
                .map(|done| (done, t.elapsed()));
            let tested = tester.join().expect("dar -t thread");
            let sampled = sampler.join().expect("restore test thread");
            drop(checks);
            Ok((created, tested, sampled, protected))
        });
        let _ = std::fs::remove_dir_all(&scratch);
        let (created, tested, sampled, protected) = outcome?;
        phases.record("dar -t", tested?);
        let (restore, took) = sampled?;
        phases.record("restore test", took);
        let ((files, groups, seals), took) = protected?;
        phases.record("hash + par2 after dar -c", took);
        check_stop()?;
        Ok(Checked {
            created,
            restore,
            files,
            groups,
            seals,
        })
    }

    /// `dar -c` under its progress bar, noting each file's size for `dar -t`'s halves.
    fn run_dar(
        &self,
        options: &CreateOptions,
        total: Option<u64>,
        sizes: &mut Sizes,
        settled: &Settled,
    ) -> Result<CreateReport> {
        let task = self
            .progress
            .start(&format!("{}: dar -c", self.name), total);
        let meter = Meter::new(&*task);
        let created = std::thread::scope(|inner| {
            let watcher = inner.spawn(|| meter.watch_slices(self.staging.path(), self.archive));
            // Stopped however dar's run ends, a panic included: the scope waits for it.
            let _stop = meter.stop_on_drop(watcher.thread().clone());
            crate::cpu::on_this_thread("dar -c, reading its output", || {
                self.tools.dar.create(options, |p| {
                    let bytes = std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0);
                    meter.file_started(bytes);
                    if let Ok(rel) = p.strip_prefix(options.source) {
                        sizes.add(&rel.to_string_lossy(), bytes);
                    }
                    settled.file_done();
                })
            })
        });
        created.and_then(|c| match slice_path(self.archive, 1).is_file() {
            true => Ok(c),
            false => Err(Error::Failed("dar -c produced no slice".into())),
        })
    }

    /// List what the archive saved, sample from it, restore the sample and compare.
    fn restore_test(&self, scratch: &Path) -> Result<(restore_test::Outcome, Duration)> {
        crate::cpu::on_this_thread("restore test, in darvault", || {
            self.sample_and_compare(scratch)
        })
    }

    fn sample_and_compare(&self, scratch: &Path) -> Result<(restore_test::Outcome, Duration)> {
        let t = Instant::now();
        let dar = &self.tools.dar;
        let mut sampler = Sampler::new(&self.definition.restore_test);
        dar.list_saved(self.archive, self.key, |e| sampler.offer(&e))?;
        let archive = restore_test::Archive {
            dar,
            path: self.archive,
            key: self.key,
        };
        let source = self.definition.source.path();
        restore_test::run(&archive, source, scratch, sampler, self.started)
            .map(|o| (o, t.elapsed()))
    }

    /// par2_verify: every PAR2 set must verify before the set may be published.
    fn verify_par2(&self, groups: &[par2::Group], phases: &mut Phases) -> Result<Option<String>> {
        if !self.definition.par2_verify {
            return Ok(None);
        }
        let t = Instant::now();
        for g in groups {
            let verdict = self
                .tools
                .par2
                .check(self.staging.path(), &g.index, false)?;
            if verdict != par2::Verdict::Intact {
                return Err(Error::Failed(format!(
                    "par2 verify of {} found {verdict:?} right after it was made: the set was not published",
                    g.index
                )));
            }
        }
        phases.record("par2 verify", t.elapsed());
        Ok(Some("passed".to_owned()))
    }

    /// The chain's tools and RESTORE.txt in the set, then its manifest, written and proven
    /// against the seals. Also the warnings.
    fn describe(
        &self,
        definition_dir: &Path,
        repository: &LocalCopy,
        checked: Checked,
        par2_verified: Option<String>,
    ) -> Result<(Manifest, Vec<String>)> {
        let Checked {
            created,
            restore,
            mut files,
            groups,
            mut seals,
        } = checked;
        let created_at =
            jiff::Timestamp::try_from(self.started).unwrap_or_else(|_| jiff::Timestamp::now());
        let bundled = crate::cpu::on_this_thread("bundle", || {
            self.bundle(definition_dir, repository, &groups, created_at)
        })?;
        // Every folder the bundle's files are in: bundle/, and bundle/<machine>/.
        let folders: std::collections::BTreeSet<&str> = bundled
            .iter()
            .filter_map(|f| f.path.rsplit_once('/').map(|(dir, _)| dir))
            .collect();
        for dir in folders {
            seals.watch_dir(dir)?;
        }
        for f in bundled {
            files.push(seals.hash(&f.path, f.role)?);
        }
        let mut warnings = created.warnings.clone();
        warnings.extend(
            restore.changed.iter().map(|p| {
                format!("restore test: {p} changed in the source after the backup started")
            }),
        );
        let manifest = crate::cpu::on_this_thread("manifest", || {
            let manifest =
                self.manifest(created_at, &created, restore, par2_verified, groups, files);
            manifest.write(self.staging.path()).map(|_| manifest)
        })?;
        // The last gate: what is published is exactly what the manifest records.
        seals.prove(&manifest.files)?;
        Ok((manifest, warnings))
    }

    /// RESTORE.txt, and the chain's tools when this set carries them: the newest set of the
    /// chain that has them carries them (its FULL, or a later set made when the tools
    /// changed: an upgrade, another par2 engine).
    fn bundle(
        &self,
        definition_dir: &Path,
        repository: &LocalCopy,
        groups: &[par2::Group],
        created_at: jiff::Timestamp,
    ) -> Result<Vec<FileEntry>> {
        let (tools, plan, name) = (self.tools, self.plan, self.name);
        let mut binaries = tools.bundle.files();
        let tools_set = match plan.name.level {
            Level::Full => None,
            _ => tools_holder(definition_dir, &plan.chain, &binaries)?,
        };
        let carries_tools = tools_set.is_none();
        let tools_set = tools_set.unwrap_or_else(|| name.to_owned());
        // Carrying the chain's tools again (this machine's changed): the other machine's,
        // not found here now, are kept from the set that carried them.
        let missing: Vec<Architecture> = tools.bundle.missing.iter().map(|(a, _)| *a).collect();
        let programs: std::collections::BTreeSet<&str> = tools
            .bundle
            .architectures
            .iter()
            .flat_map(|a| a.programs.iter().map(|(p, _)| *p))
            .collect();
        let programs: Vec<&str> = programs.into_iter().collect();
        let kept = match carries_tools && plan.name.level != Level::Full {
            true => bundle::kept_from_chain(
                definition_dir,
                &plan.chain,
                &missing,
                &tools.dar.version,
                &programs,
            ),
            false => Vec::new(),
        };
        for k in &kept {
            binaries.extend(
                k.files
                    .iter()
                    .map(|(n, path, _)| (n.clone(), path.as_path())),
            );
        }
        let mut architectures: Vec<&str> = tools
            .bundle
            .architectures
            .iter()
            .map(|a| a.arch.as_str())
            .collect();
        architectures.extend(kept.iter().map(|k| k.arch.as_str()));
        // As the FULL names them: x86_64 first.
        architectures.sort_by_key(|a| *a != Architecture::X86_64.as_str());
        let all_have = |program: &str| {
            !architectures.is_empty()
                && architectures.iter().all(|a| {
                    let name = format!("{a}/{program}");
                    binaries.iter().any(|(n, _)| *n == name)
                })
        };
        let mut chain = plan.chain.clone();
        chain.push(name.to_owned());
        let par2_indexes: Vec<String> = groups.iter().map(|g| g.index.clone()).collect();
        let par2_dir = self.par2_dir();
        let restore_text = RestoreText {
            set: name,
            definition: self.definition.name().as_str(),
            level: plan.name.level.as_str(),
            created: &created_at
                .round(jiff::Unit::Second)
                .unwrap_or(created_at)
                .to_string(),
            dar_version: &tools.dar.version,
            chain: &chain,
            tools_set: &tools_set,
            par2_indexes: &par2_indexes,
            architectures: &architectures,
            par2_bundled: all_have("par2"),
            darvault_bundled: all_have("darvault"),
            encrypted: self.key.is_some(),
            par2_dir: par2_dir.as_deref(),
        }
        .render();
        let store = repository.root().join(".darvault").join("bundle");
        let entries = bundle::write(
            self.staging.path(),
            &store,
            carries_tools.then_some(binaries.as_slice()),
            &restore_text,
        )?;
        // What was kept from an older set is, in this set, the bytes that set's manifest
        // records (the seals keep them so until the set is published).
        for (name, _, older) in kept.iter().flat_map(|k| &k.files) {
            let staged = self.staging.path().join(bundle::DIR).join(name);
            if crate::hashing::hash_file(&staged)? != (older.size, older.sha256.clone()) {
                return Err(Error::Failed(format!(
                    "{} changed while it was carried again from an older set of the chain",
                    staged.display()
                )));
            }
        }
        Ok(entries)
    }

    fn par2_dir(&self) -> Option<String> {
        self.definition
            .par2_dir
            .as_ref()
            .map(|d| d.path().display().to_string())
    }

    /// The manifest of the set: what it is, what made it, what it passed and every file.
    fn manifest(
        &self,
        created_at: jiff::Timestamp,
        created: &CreateReport,
        restore: restore_test::Outcome,
        par2_verified: Option<String>,
        groups: Vec<par2::Group>,
        files: Vec<FileEntry>,
    ) -> Manifest {
        let (definition, plan) = (self.definition, self.plan);
        let compression = definition.compression.to_string();
        let slices = files.iter().filter(|f| f.role == Role::Slice).count() as u32;
        Manifest {
            format: FORMAT,
            darvault_version: env!("CARGO_PKG_VERSION").into(),
            set: SetInfo {
                name: self.name.to_owned(),
                definition: definition.name().to_string(),
                level: plan.name.level,
                created: created_at,
                host: crate::host_name(),
                chain: plan.chain.clone(),
                base: plan.base.as_ref().map(|b| BaseRef {
                    name: b.manifest.set.name.clone(),
                    manifest_sha256: b.manifest_sha256.clone(),
                }),
            },
            archive: ArchiveInfo {
                basename: plan.name.archive_basename(),
                slices,
                slice_size: definition.slice_size.0,
                compression: compression.clone(),
                encrypted: self.key.is_some(),
                catalogue: plan.name.catalogue_basename(),
                saved_files: created.saved_inodes,
            },
            tools: ToolVersions {
                dar: self.tools.dar.version.clone(),
                par2: self.tools.par2.describe(),
            },
            definition: Some(DefinitionRecord {
                source: definition.source.path().display().to_string(),
                include: definition
                    .include
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                exclude: definition.exclude.clone(),
                prune: definition
                    .prune
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                cache_directory_tagging: definition.cache_directory_tagging,
                compression,
                no_compress: definition.no_compress.clone(),
                dar_options: definition.dar_options.clone(),
                slice_size: definition.slice_size.0,
                redundancy_percent: redundancy(definition, plan.name.level),
                par2_dir: self.par2_dir(),
            }),
            checks: Checks {
                dar_test: "passed".into(),
                restore_test: restore.record,
                warnings: created.failed_inodes + created.changed_inodes,
                par2_verify: par2_verified,
                not_saved: created
                    .not_saved
                    .iter()
                    .map(|n| NotSaved {
                        path: n.path.clone(),
                        reason: n.reason.clone(),
                    })
                    .collect(),
            },
            par2: groups,
            files,
        }
    }
}

/// `dar -t` of the archive: as two halves side by side where there are cores for both and
/// the archive is large enough for that to pay (see `halves`).
fn test_archive(dar: &Dar, archive: &Path, key: Option<&Passphrase>, sizes: &Sizes) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let memory = super::halves::available_memory();
    let Some(first) = sizes.first_half(memory).filter(|_| cores > 1) else {
        return dar.test(archive, key).map(|_| ());
    };
    std::thread::scope(|scope| {
        let other = scope.spawn(|| dar.test_part(archive, key, &first, true));
        let mine = dar.test_part(archive, key, &first, false);
        let other = other.join().expect("dar -t thread");
        mine.and(other).map(|_| ())
    })
}

fn redundancy(definition: &Definition, level: Level) -> u32 {
    let r = &definition.redundancy;
    match level {
        Level::Full => r.full.0,
        Level::Diff => r.diff.0,
        Level::Incr => r.incr.0,
    }
}

/// `<basename>.<n>.dar`
pub fn slice_path(basename: &Path, n: u32) -> PathBuf {
    let mut s = basename.as_os_str().to_owned();
    s.push(format!(".{n}.dar"));
    PathBuf::from(s)
}

/// What can be done to a slice as soon as dar has moved on to the next one: hash it while it
/// is still in the page cache and, with large slices, make its PAR2 set; on the core dar's
/// single-threaded compression leaves free. dar may still come back to a finished slice
/// (set::seal): the seals say afterwards which of this work still holds.
struct EarlyWork<'a> {
    archive: &'a Path,
    set_name: &'a str,
    dir: &'a Path,
    layout: &'a par2::Layout,
}

/// The hashes made while dar ran, with the seals that prove them, and the PAR2 sets asked
/// of the protector.
struct Early<'a> {
    dir: &'a Path,
    archive: &'a Path,
    layout: &'a par2::Layout,
    seals: Seals,
    slices: Vec<FileEntry>,
    asked: Vec<par2::Group>,
}

/// What the protector made: each PAR2 set asked of it, made or not. It makes them one after
/// another on one core, beside dar -c and then beside the checks, so that neither the slice
/// worker nor the end of the run waits for a set begun just before dar exited.
type Protected = Vec<(par2::Group, Result<()>)>;

/// Make the PAR2 sets that arrive on `asked` in `dir`, until the slice worker is done.
fn protect(asked: Receiver<par2::Group>, dir: &Path, par2: &par2::Par2) -> Protected {
    crate::tools::process::lower_this_threads_priority();
    asked
        .into_iter()
        .map(|g| {
            let made = par2.create_on_one_core(dir, &g);
            match &made {
                Ok(()) => start_group_writeback(dir, &g),
                Err(_) => remove_group_files(dir, &g),
            }
            (g, made)
        })
        .collect()
}

/// Which slices dar is unlikely to come back to. dar reports each file once its data is
/// written for good (rewrite included), and the next file starts in the newest slice, so the
/// slices before the newest one at that moment are settled. Only a hint that saves redoing
/// work: the seals prove afterwards what really did not change.
struct Settled<'a> {
    archive: &'a Path,
    /// Slices numbered below this are settled.
    below: AtomicU32,
}

impl Settled<'_> {
    /// dar has finished a file: every slice but the newest is settled.
    fn file_done(&self) {
        let mut newest = self.below.load(Ordering::Relaxed).max(1);
        while slice_path(self.archive, newest + 1).exists() {
            newest += 1;
        }
        self.below.store(newest, Ordering::Relaxed);
    }

    fn is_settled(&self, n: u32) -> bool {
        n < self.below.load(Ordering::Relaxed)
    }
}

impl<'a> EarlyWork<'a> {
    /// Until dar is done; the last slice is left to the next phase. A slice that cannot be
    /// read now (dar may be rewriting it) is simply left for later. Its PAR2 set goes to the
    /// protector (`protect`) on `to_protect`.
    fn run(
        &self,
        mut seals: Seals,
        settled: &Settled,
        dar_done: &AtomicBool,
        to_protect: Sender<par2::Group>,
    ) -> Result<Early<'a>> {
        crate::tools::process::lower_this_threads_priority();
        let (mut slices, mut asked) = (Vec::new(), Vec::new());
        let mut n = 1;
        // Without change notifications nothing done now could be proven later.
        let mut gave_up = !seals.watching();
        while !dar_done.load(Ordering::Relaxed) {
            check_stop()?;
            if gave_up || !settled.is_settled(n) {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            match self.slice(&mut seals, n) {
                Ok((slice, group)) => {
                    slices.push(slice);
                    if let Some(g) = group
                        && to_protect.send(g.clone()).is_ok()
                    {
                        asked.push(g);
                    }
                    n += 1;
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    tracing::debug!("early work stopped at slice {n}: {e}");
                    gave_up = true;
                }
            }
        }
        Ok(Early {
            dir: self.dir,
            archive: self.archive,
            layout: self.layout,
            seals,
            slices,
            asked,
        })
    }

    /// Hash slice `n` and seal it; its PAR2 set, when it can have one of its own now.
    fn slice(&self, seals: &mut Seals, n: u32) -> Result<(FileEntry, Option<par2::Group>)> {
        let rel = slice_name(self.archive, n);
        let slice = seals.hash(&rel, Role::Slice)?;
        staging::start_writeback(&self.dir.join(&rel));
        let group = self
            .layout
            .early_group(self.set_name, n as usize, &(rel, slice.size));
        Ok((slice, group))
    }
}

impl Early<'_> {
    /// dar has exited: drop the hashes of slices it changed after they were made (and of
    /// slices that are gone), so that `finish` makes them again; the names of those slices.
    fn discard_what_dar_changed(&mut self) -> Result<Vec<String>> {
        let broken = self.seals.broken()?;
        tracing::debug!(
            "while dar ran: {} slice(s) hashed, {} PAR2 set(s) asked",
            self.slices.len(),
            self.asked.len()
        );
        if !broken.is_empty() {
            tracing::debug!(
                "dar changed {} finished slice(s) after they were hashed: {broken:?}",
                broken.len()
            );
        }
        self.slices.retain(|s| !broken.contains(&s.path));
        for rel in &broken {
            self.seals.forget(rel);
        }
        Ok(broken)
    }

    /// Hash every slice not hashed yet and the catalogue while the PAR2 sets not asked of the
    /// protector are made beside (both read the same bytes, sealed before either starts);
    /// then take what the protector made (`protected`: it waits for the protector), make
    /// again what it could not or what covers a slice dar changed, and hash every PAR2 file.
    /// Returns the set's files so far, its PAR2 layout and the seals.
    fn finish(
        mut self,
        name: &crate::set::SetName,
        par2: &par2::Par2,
        protected: impl FnOnce() -> Protected,
    ) -> Result<(Vec<FileEntry>, Vec<par2::Group>, Seals)> {
        let broken = self.discard_what_dar_changed()?;
        // A set covering a changed slice is made again under the same name: not while the
        // protector may still be writing it.
        let mut protected = Some(protected);
        let mut early = Vec::new();
        if !broken.is_empty() {
            early = (protected.take().expect("not taken yet"))();
        }
        let mut files = std::mem::take(&mut self.slices);
        let mut slices = Vec::new();
        let mut n = 1;
        while slice_path(self.archive, n).is_file() {
            slices.push(slice_name(self.archive, n));
            n += 1;
        }
        let catalogue = slice_name(&self.dir.join(name.catalogue_basename()), 1);
        let mut to_hash: Vec<(String, Role)> = slices
            .iter()
            .filter(|rel| !files.iter().any(|f| &f.path == *rel))
            .map(|rel| (rel.clone(), Role::Slice))
            .collect();
        to_hash.push((catalogue.clone(), Role::Catalogue));
        let (dir, layout, asked) = (self.dir, self.layout, &self.asked);
        let made_early = |g: &par2::Group| {
            asked.contains(g)
                && g.covers.iter().all(|c| !broken.contains(c))
                && early.iter().all(|(e, made)| e != g || made.is_ok())
        };
        let hashed_early = &files;
        let (hashed, groups) = self.seals.hash_beside(&to_hash, |sizes| {
            let size_of = |rel: &String| {
                let early = hashed_early.iter().find(|f| &f.path == rel).map(|f| f.size);
                early.unwrap_or_else(|| {
                    sizes[to_hash.iter().position(|t| &t.0 == rel).expect("listed")]
                })
            };
            let slice_list: Vec<(String, u64)> = slices
                .iter()
                .map(|rel| (rel.clone(), size_of(rel)))
                .collect();
            let groups = layout.plan(
                &name.to_string(),
                &slice_list,
                &[(catalogue.clone(), size_of(&catalogue))],
            );
            for g in groups.iter().filter(|g| !made_early(g)) {
                remove_group_files(dir, g);
                par2.create(dir, g)?;
                start_group_writeback(dir, g);
            }
            Ok::<_, Error>(groups)
        })?;
        let groups = groups?;
        // What the protector could not make is made here, now that it has stopped.
        if let Some(protected) = protected {
            for (g, made) in protected() {
                if let Err(e) = made {
                    check_stop()?;
                    tracing::debug!("PAR2 made beside dar -c failed, made again: {e}");
                    if groups.contains(&g) {
                        par2.create(dir, &g)?;
                        start_group_writeback(dir, &g);
                    }
                }
            }
        }
        let (cat_entry, slice_entries) = hashed.split_last().expect("the catalogue was hashed");
        for slice in slice_entries {
            staging::start_writeback(&self.dir.join(&slice.path));
        }
        files.extend_from_slice(slice_entries);
        files.sort_by_key(|f| slice_number(&f.path));
        files.push(cat_entry.clone());
        for g in &groups {
            for f in par2::files_of(self.dir, g)? {
                files.push(self.seals.hash(&f, Role::Par2)?);
            }
        }
        Ok((files, groups, self.seals))
    }
}

/// The file name of slice `n` of `archive`.
fn slice_name(archive: &Path, n: u32) -> String {
    slice_path(archive, n)
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}

/// `N` of `<basename>.<N>.dar`.
fn slice_number(name: &str) -> u32 {
    name.trim_end_matches(".dar")
        .rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Start writing the files par2 made for `group` to disk (see `staging::start_writeback`).
fn start_group_writeback(dir: &Path, group: &par2::Group) {
    for f in par2::files_of(dir, group).unwrap_or_default() {
        staging::start_writeback(&dir.join(f));
    }
}

/// Remove whatever par2 wrote for `group` (a failed or outdated run).
fn remove_group_files(dir: &Path, group: &par2::Group) {
    for f in par2::files_of(dir, group).unwrap_or_default() {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

/// Progress of `dar -c` in source bytes: the files dar has finished (it names a file as it
/// starts it, so a file counts once the next one starts), or the bytes of the slices written
/// so far when that is more (one large video is a long time in one file). Never goes back.
struct Meter<'a> {
    task: &'a dyn crate::progress::Task,
    shown: std::sync::atomic::AtomicU64,
    finished: std::sync::atomic::AtomicU64,
    current: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicBool,
}

impl<'a> Meter<'a> {
    fn new(task: &'a dyn crate::progress::Task) -> Self {
        Meter {
            task,
            shown: 0.into(),
            finished: 0.into(),
            current: 0.into(),
            done: false.into(),
        }
    }

    fn show(&self, position: u64) {
        let before = self.shown.fetch_max(position, Ordering::Relaxed);
        if position > before {
            self.task.advance(position - before);
        }
    }

    fn file_started(&self, size: u64) {
        let previous = self.current.swap(size, Ordering::Relaxed);
        let finished = self.finished.fetch_add(previous, Ordering::Relaxed) + previous;
        self.show(finished);
    }

    /// Until `stop`: twice a second, the size of the archive's slices in `dir`.
    fn watch_slices(&self, dir: &Path, archive: &Path) {
        let prefix = format!(
            "{}.",
            archive.file_name().unwrap_or_default().to_string_lossy()
        );
        while !self.done.load(Ordering::Relaxed) {
            std::thread::park_timeout(Duration::from_millis(500));
            let written: u64 = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(&prefix)
                        && name.ends_with(".dar")
                        && !name.contains(".catalog.")
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum();
            self.show(written);
        }
    }

    fn stop_on_drop(&'a self, watcher: std::thread::Thread) -> StopMeter<'a> {
        StopMeter {
            meter: self,
            watcher,
        }
    }
}

/// Ends a `Meter`'s watch when dropped.
struct StopMeter<'a> {
    meter: &'a Meter<'a>,
    watcher: std::thread::Thread,
}

impl Drop for StopMeter<'_> {
    fn drop(&mut self) {
        let m = self.meter;
        m.done.store(true, Ordering::Relaxed);
        self.watcher.unpark();
        m.show(m.finished.load(Ordering::Relaxed) + m.current.load(Ordering::Relaxed));
    }
}

/// The newest set of `chain` (in `definition_dir`) whose bundle holds every one of today's
/// tools byte for byte, and the gpg stand-in; `None` when that set does not (this set then
/// carries them).
fn tools_holder(
    definition_dir: &Path,
    chain: &[String],
    binaries: &[(String, &Path)],
) -> Result<Option<String>> {
    let holder = chain.iter().rev().find_map(|set| {
        let manifest = crate::set::Manifest::read(&definition_dir.join(set)).ok()?;
        manifest.carries_tools().then_some((set, manifest))
    });
    let Some((set, manifest)) = holder else {
        return Ok(None);
    };
    let holds = |path: &str, sha: &str| {
        manifest
            .files
            .iter()
            .any(|f| f.path == path && f.sha256 == sha)
    };
    let stand_in = crate::hashing::sha256_hex(crate::tools::gpg_stand_in::TEXT.as_bytes());
    if !holds(
        &format!(
            "{}/{}",
            bundle::DIR,
            crate::tools::gpg_stand_in::BUNDLED_NAME
        ),
        &stand_in,
    ) {
        return Ok(None);
    }
    for (name, path) in binaries {
        let (_, sha) = crate::hashing::hash_file(path)?;
        if !holds(&format!("{}/{name}", bundle::DIR), &sha) {
            return Ok(None);
        }
    }
    Ok(Some(set.clone()))
}
