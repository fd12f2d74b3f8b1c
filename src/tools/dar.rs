//! dar, supervised: create, test, list (XML) and extract. Every run gets `-Q` (no terminal: a
//! question aborts instead of hanging) and `-N` (no ~/.darrc or /etc/darrc changing behaviour).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_xml::events::{BytesStart, Event};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::dar_pipes::make_pipe;
use super::process::{Finished, Spec, find_executable};
use super::secret::Passphrase;
use crate::error::{Error, Result};

const INSTALL_HINT: &str = "install dar (Debian/Ubuntu: apt-get install dar dar-static)";

/// dar exit codes that still leave a usable archive: 5 (some files could not be read) and
/// 11 (some files changed while being saved).
const CREATE_WITH_WARNINGS: [i32; 2] = [5, 11];

#[derive(Debug, Clone)]
pub struct Dar {
    pub path: PathBuf,
    pub version: String,
    /// Run every command in this folder with an empty environment (`darvault drill`).
    pub isolated_in: Option<PathBuf>,
    /// No gpg on this machine: a static dar asks about it on a terminal (see `terminal`),
    /// so it runs on one, without -Q.
    answer_on_terminal: bool,
    /// Reading a copy that may hang: stopped after reading nothing for this long.
    pub io_stall: Option<Duration>,
}

/// The options of `dar -c` that decide what is saved and how (compression, slices, filters,
/// what is stored uncompressed), the definition's own included: what a `dar -c` by hand
/// needs to do the same work (a benchmark's floor).
pub fn what_to_save(o: &CreateOptions) -> Vec<String> {
    let mut args = vec![
        format!("-z{}", o.compression),
        "-s".to_owned(),
        o.slice_size.to_string(),
    ];
    if o.cache_directory_tagging {
        args.push("--cache-directory-tagging".to_owned());
    }
    args.extend(o.extra.iter().cloned());
    for g in o.include {
        args.extend(["-g".to_owned(), g.clone()]);
    }
    for p in o.prune_masks {
        args.extend(["-P".to_owned(), p.clone()]);
    }
    if !o.no_compress.is_empty() {
        // -an/-acase switch case sensitivity for the masks that follow them.
        args.push("-an".to_owned());
        for z in o.no_compress {
            args.extend(["-Z".to_owned(), z.clone()]);
        }
        args.push("-acase".to_owned());
    }
    args
}

/// What `dar -c` is asked to do.
pub struct CreateOptions<'a> {
    /// `<dir>/<basename>`: slices become `<basename>.<N>.dar`.
    pub archive: &'a Path,
    /// `<dir>/<basename>` of the isolated catalogue made on the fly (`-@`).
    pub catalogue: &'a Path,
    /// The base's isolated catalogue for a DIFF/INCR (`-A`).
    pub reference: Option<&'a Path>,
    pub source: &'a Path,
    pub compression: &'a str,
    pub slice_size: u64,
    pub include: &'a [String],
    /// dar path masks relative to the source (`-P`).
    pub prune_masks: &'a [String],
    /// File name masks stored without compression (`-Z`, case-insensitive).
    pub no_compress: &'a [String],
    pub cache_directory_tagging: bool,
    /// The definition's own `dar_options` (refused at config load when they would touch
    /// what darvault sets).
    pub extra: &'a [String],
    pub comment: &'a str,
    pub timeout: Duration,
    /// Encrypt the archive and its catalogue (and read the reference) with this key.
    pub key: Option<&'a Passphrase>,
}

/// dar's own account of a `dar -c` run.
#[derive(Debug, Default, Clone)]
pub struct CreateReport {
    pub saved_inodes: u64,
    pub failed_inodes: u64,
    pub changed_inodes: u64,
    pub deleted_recorded: u64,
    /// Lines in which dar named files it could not save properly (exit 5 or 11).
    pub warnings: Vec<String>,
    /// Files dar could not read ("Error while saving <path>: <why>"), relative to the source.
    pub not_saved: Vec<NotSaved>,
}

/// One entry of an archive listing.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative to the source root, '/'-separated.
    pub path: String,
    pub kind: EntryKind,
    /// Whether the data is stored in this archive ("saved"), only referenced, or the entry
    /// records a deletion.
    pub data: DataState,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Permission bits (with set-id and sticky), as listed.
    pub mode: Option<u32>,
    /// dar saw the file change while reading it.
    pub dirty: bool,
}

/// Where an archive keeps what dar reads of some paths.
pub struct Slicing {
    /// Of every listed entry: the paths and their parent folders (a folder's record is
    /// where dar walked it, which may be slices away from a file's data: a big file
    /// before it in the folder, or a hard link whose data was saved with its first name).
    pub all: BTreeSet<u32>,
    /// Of each path's own entry, where its row could be read.
    pub entries: BTreeMap<String, BTreeSet<u32>>,
}

/// How dar lays out what it extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Each path where it was, its parent folders restored from their records.
    Tree,
    /// Files straight into the target by name (`-f`): no folder is read or made.
    Flat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataState {
    /// The data is stored in this archive (an isolated catalogue says "referenced" for these
    /// too, but keeps their CRC or symlink target: that is how they are told apart).
    Saved,
    /// Unchanged since the base: the data is in an older archive.
    Referenced,
    /// Only the inode (permissions, times) changed: metadata here, data in an older archive.
    InodeOnly,
    /// The entry records that the file was deleted since the base.
    Deleted,
    Other,
}

impl Dar {
    /// Find dar (an explicit path, else `dar` on PATH, else `dar_static` on PATH: a rescue
    /// machine may have only the static one, a set's bundled copy among them) and read its
    /// version.
    pub fn locate(explicit: Option<&Path>) -> Result<Dar> {
        let path =
            find_executable("dar", explicit, INSTALL_HINT).or_else(|missing| match explicit {
                Some(_) => Err(missing),
                None => find_executable("dar_static", None, INSTALL_HINT).map_err(|_| missing),
            })?;
        Dar::at(path)
    }

    pub fn at(path: PathBuf) -> Result<Dar> {
        let answer_on_terminal = !super::gpg_stand_in::gpg_available();
        let mut probe = Spec::new(&path);
        probe.arg("--version");
        if answer_on_terminal {
            probe.on_terminal();
        }
        let (finished, out) = probe.output()?;
        let text = format!("{out}\n{}", finished.stderr);
        let version = text
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .map(|v| v.trim_end_matches(',').to_owned())
            .ok_or_else(|| {
                Error::Failed(format!(
                    "{} does not look like dar: {}",
                    path.display(),
                    text.trim()
                ))
            })?;
        Ok(Dar {
            path,
            version,
            isolated_in: None,
            answer_on_terminal,
            io_stall: None,
        })
    }

    /// A dar command line; with a key, `key_flags` (-K, -J, -$) get it through an in-memory
    /// options file.
    fn spec(&self, key: Option<&Passphrase>, key_flags: &[&str]) -> Result<Spec> {
        let mut s = Spec::new(&self.path);
        s.io_stall(self.io_stall);
        if self.answer_on_terminal {
            s.arg("-N").on_terminal();
        } else {
            s.args(["-Q", "-N"]);
        }
        if let Some(dir) = &self.isolated_in {
            s.clean_env().current_dir(dir);
        }
        if let Some(key) = key {
            let options: Vec<String> = key_flags
                .iter()
                .map(|f| format!("{f} {}", key.dar_key()))
                .collect();
            s.options_file("-B", &(options.join("\n") + "\n"))?;
        }
        Ok(s)
    }

    /// `dar -c`; `on_file` is called with each path dar adds (for progress). What it saves
    /// and how is [`what_to_save`].
    pub fn create(
        &self,
        o: &CreateOptions,
        mut on_file: impl FnMut(&Path),
    ) -> Result<CreateReport> {
        let mut key_flags = vec!["-K", "-$"];
        if o.reference.is_some() {
            key_flags.push("-J");
        }
        let mut s = self.spec(o.key, &key_flags)?;
        s.arg("-c")
            .arg(o.archive)
            .arg("-R")
            .arg(o.source)
            .arg("-@")
            .arg(o.catalogue)
            .arg("--user-comment")
            .arg(o.comment)
            .arg("-vt")
            .stdout_to_file()
            .timeout(Some(o.timeout));
        if let Some(r) = o.reference {
            s.arg("-A").arg(r);
        }
        s.args(what_to_save(o));
        let source = format!("{}/", o.source.display());
        let (finished, mut report) = s.run(|out| {
            let mut report = CreateReport::default();
            for line in out.split(b'\n').map_while(|l| l.ok()) {
                let line = String::from_utf8_lossy(&line);
                if let Some(p) = line.strip_prefix("Adding file to archive: ") {
                    on_file(Path::new(p));
                } else {
                    // dar's report (not its per-file chatter) goes to the commands log.
                    let chatter = line.starts_with("Saving Filesystem Specific Attributes for ")
                        || line.starts_with("Saving Extended Attributes for ");
                    if !line.trim().is_empty() && !chatter {
                        tracing::debug!(target: crate::logs::OUTPUT_TARGET, "dar: {line}");
                    }
                    if let Some(rest) = line.strip_prefix("Error while saving ") {
                        report.not_saved.push(not_saved(rest, &source));
                    } else {
                        parse_counter(&line, &mut report);
                    }
                }
            }
            report
        })?;
        match finished.code() {
            Some(0) => {}
            Some(c) if CREATE_WITH_WARNINGS.contains(&c) => {
                report.warnings = report
                    .not_saved
                    .iter()
                    .map(|n| format!("not saved: {} ({})", n.path, n.reason))
                    .chain(
                        finished
                            .stderr
                            .lines()
                            .filter(|l| !l.trim().is_empty())
                            .map(str::to_owned),
                    )
                    .collect();
                if report.warnings.is_empty() {
                    report.warnings.push(format!("dar exited with code {c}"));
                }
            }
            _ => return Err(failure(&finished, o.key)),
        }
        Ok(report)
    }

    /// `dar -t`: reads every slice and checks every file's CRC.
    pub fn test(&self, archive: &Path, key: Option<&Passphrase>) -> Result<Finished> {
        self.test_part(archive, key, &[], false)
    }

    /// `dar -t` of a part of the archive: the subtrees `subtrees` (`-g`), or with `all_but`
    /// everything except them (`-P`); all of it when `subtrees` is empty. The two parts of the
    /// same subtrees test every entry.
    pub fn test_part(
        &self,
        archive: &Path,
        key: Option<&Passphrase>,
        subtrees: &[String],
        all_but: bool,
    ) -> Result<Finished> {
        let mut s = self.spec(key, &["-K"])?;
        s.arg("-t").arg(archive);
        for p in subtrees {
            s.arg(if all_but { "-P" } else { "-g" }).arg(p);
        }
        judge(s.output()?.0, key)
    }

    /// Stream the listing of an archive or isolated catalogue, limited to `paths` (and their
    /// parent directories) unless empty; `on_entry` sees every entry in archive order.
    pub fn list(
        &self,
        archive: &Path,
        key: Option<&Passphrase>,
        paths: &[String],
        on_entry: impl FnMut(Entry),
    ) -> Result<()> {
        self.list_with(archive, key, paths, false, on_entry)
    }

    /// Stream the entries whose data `archive` stores (`-as`), with their folders: what a
    /// DIFF or INCR left unchanged (most of its catalogue) is neither written nor parsed.
    pub fn list_saved(
        &self,
        archive: &Path,
        key: Option<&Passphrase>,
        on_entry: impl FnMut(Entry),
    ) -> Result<()> {
        self.list_with(archive, key, &[], true, on_entry)
    }

    fn list_with(
        &self,
        archive: &Path,
        key: Option<&Passphrase>,
        paths: &[String],
        saved_only: bool,
        mut on_entry: impl FnMut(Entry),
    ) -> Result<()> {
        let mut s = self.spec(key, &["-K"])?;
        s.arg("-l").arg(archive).args(["-Txml", "-ay"]);
        if saved_only {
            s.arg("-as");
        }
        for p in paths {
            s.arg("-g").arg(p);
        }
        let (finished, parsed) = s.run(|out| parse_listing(out, &mut on_entry))?;
        judge(finished, key)?;
        parsed
    }

    /// Which slices hold what dar reads of `paths` (an isolated catalogue knows the
    /// slicing): of them all, with their parent folders, and of each path alone.
    pub fn slicing(
        &self,
        catalogue: &Path,
        key: Option<&Passphrase>,
        paths: &[String],
    ) -> Result<Slicing> {
        let mut s = self.spec(key, &["-K"])?;
        s.arg("-l").arg(catalogue).args(["-Tslicing", "-ay"]);
        for p in paths {
            s.arg("-g").arg(p);
        }
        let (finished, out) = s.output()?;
        judge(finished, key)?;
        let all = out
            .lines()
            .rev()
            .find_map(parse_slice_ranges)
            .ok_or_else(|| Error::Failed(format!("dar listed no slice summary: {out}")))?;
        let entries = paths
            .iter()
            .filter_map(|p| Some((p.clone(), slices_of_row(&out, p)?)))
            .collect();
        Ok(Slicing { all, entries })
    }

    /// Extract `paths` (relative to the source) into `target`, ignoring ownership so that
    /// restores work without root. With the set's isolated catalogue, dar needs only the
    /// first and last slice and those holding the data of `paths`.
    pub fn extract(
        &self,
        archive: Archive,
        catalogue: Option<&Path>,
        key: Option<&Passphrase>,
        target: &Path,
        paths: &[String],
        layout: Layout,
    ) -> Result<Vec<NotRestored>> {
        let mut s = self.spec(key, &["-K", "-J"])?;
        let pipes = match &archive {
            Archive::Slices(path) => {
                s.arg("-x").arg(path);
                None
            }
            Archive::Served(_) => {
                let dir = tempfile::Builder::new()
                    .prefix("darvault-pipes.")
                    .tempdir()
                    .map_err(|e| Error::Failed(format!("cannot make a temporary folder: {e}")))?;
                let (answers, orders) = (dir.path().join("answers"), dir.path().join("orders"));
                let ends = (make_pipe(&answers)?, make_pipe(&orders)?);
                s.args(["-x", "-", "-i"])
                    .arg(&answers)
                    .arg("-o")
                    .arg(&orders);
                Some((dir, ends))
            }
        };
        s.arg("-R")
            .arg(target)
            .args(["-O", "--fsa-scope", "none", "-wa"]);
        if layout == Layout::Flat {
            s.arg("-f");
        }
        if let Some(c) = catalogue {
            s.arg("-A").arg(c);
        }
        for p in paths {
            s.arg("-g").arg(p);
        }
        let (finished, out) = match (archive, &pipes) {
            (Archive::Served(archive), Some((_, (answers, orders)))) => {
                let ended = AtomicBool::new(false);
                // dar waits for an answer forever (it reads a closed pipe as empty, again and
                // again): when none can be given, it is stopped.
                let unanswered = Arc::new(AtomicBool::new(false));
                s.abandon_when(Arc::clone(&unanswered));
                std::thread::scope(|scope| {
                    let server = scope.spawn(|| {
                        let served = archive.serve(orders, answers, &ended);
                        if served.is_err() {
                            unanswered.store(true, Ordering::Relaxed);
                        }
                        served
                    });
                    let ran = s.output();
                    ended.store(true, Ordering::Relaxed);
                    let served = server.join().expect("the serving thread");
                    // Why the serving stopped explains why dar failed.
                    served.and(ran)
                })?
            }
            _ => s.output()?,
        };
        let (not_restored, already_absent): (Vec<_>, Vec<_>) = not_restored(&out, target)
            .into_iter()
            .partition(|n| !n.reason.starts_with(ALREADY_ABSENT));
        // A deletion this set records, of a file the target does not hold (an older set that
        // wrote it was not needed): the file is absent, as it should be.
        for n in &already_absent {
            tracing::debug!("{}: deleted in this set, and not in the target", n.path);
        }
        // Exit 5: some files could not be written (dar restored the others) — when dar's own
        // count of failures is exactly the files it named. Anything else that is not 0 is a
        // failure of the whole extraction.
        let named = (not_restored.len() + already_absent.len()) as u64;
        if finished.code() == Some(5) && named > 0 && failed_to_restore(&out) == Some(named) {
            return Ok(not_restored);
        }
        judge(finished, key).map(|_| not_restored)
    }
}

/// What `dar -x` reads.
pub enum Archive<'a, 'r> {
    /// Slices in a folder: `<dir>/<basename>`.
    Slices(&'a Path),
    /// Slices served through pipes, each byte proven as dar reads it.
    Served(&'a mut super::dar_pipes::Archive<'r>),
}

/// dar's reason when a set deletes a file the target does not hold.
const ALREADY_ABSENT: &str = "Cannot remove non-existent file";

/// A file dar could not restore, and why (its words).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NotRestored {
    /// Relative to the restore's target.
    pub path: String,
    pub reason: String,
}

/// dar's count in its summary: " N inode(s) failed to restore (filesystem error)".
fn failed_to_restore(out: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let (n, rest) = l.trim().split_once(' ')?;
        rest.starts_with("inode(s) failed to restore")
            .then(|| n.parse().ok())
            .flatten()
    })
}

/// dar's "Error while restoring <path> : <why>" lines (on stdout, one per file).
fn not_restored(out: &str, target: &Path) -> Vec<NotRestored> {
    let target = format!("{}/", target.display());
    out.lines()
        .filter_map(|line| line.strip_prefix("Error while restoring "))
        .filter_map(|rest| {
            let (path, why) = rest.split_once(" : ")?;
            let reason = why.replace(&format!("{path} : "), "");
            let path = path.strip_prefix(&target).unwrap_or(path).to_owned();
            Some(NotRestored { path, reason })
        })
        .collect()
}

/// A source file dar could not read, and why (its words).
#[derive(Debug, Clone, PartialEq)]
pub struct NotSaved {
    /// Relative to the source.
    pub path: String,
    pub reason: String,
}

/// "<path>: <why>" of an "Error while saving" line, the path made relative to the source.
fn not_saved(rest: &str, source: &str) -> NotSaved {
    let rest = rest.strip_prefix(source).unwrap_or(rest);
    let (path, reason) = rest.split_once(": ").unwrap_or((rest, ""));
    NotSaved {
        path: path.to_owned(),
        reason: reason.trim().to_owned(),
    }
}

/// dar's summary under a slicing listing: "... in slice range [1,10-12]" (or "[]").
fn parse_slice_ranges(line: &str) -> Option<BTreeSet<u32>> {
    parse_ranges(
        line.strip_prefix("All displayed files have their data in slice range [")?
            .strip_suffix(']')?,
    )
}

/// The slices of `path`'s own row in a slicing listing ("2-3\t [..]..[ ]*-rw-r--r-- path";
/// empty for an entry whose data no slice holds, a symlink's). None unless exactly one row
/// ends with the path after a permission column.
fn slices_of_row(listing: &str, path: &str) -> Option<BTreeSet<u32>> {
    let suffix = format!(" {path}");
    let mut rows = listing.lines().filter_map(|line| {
        let (slices, rest) = line.split_once('\t')?;
        let before = rest.strip_suffix(&suffix)?;
        let mode = before.get(before.len().checked_sub(10)?..)?;
        parse_mode(mode)?;
        Some(slices)
    });
    let slices = rows.next()?;
    if rows.next().is_some() {
        return None;
    }
    parse_ranges(slices.trim())
}

/// "1,10-12" (or "") as slice numbers.
fn parse_ranges(ranges: &str) -> Option<BTreeSet<u32>> {
    let mut slices = BTreeSet::new();
    for range in ranges.split(',').filter(|r| !r.is_empty()) {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        slices.extend(first.trim().parse::<u32>().ok()?..=last.trim().parse::<u32>().ok()?);
    }
    Some(slices)
}

fn parse_counter(line: &str, report: &mut CreateReport) {
    let line = line.trim();
    let Some((n, rest)) = line.split_once(' ') else {
        return;
    };
    let Ok(n) = n.parse::<u64>() else {
        return;
    };
    if rest.starts_with("inode(s) saved") {
        report.saved_inodes = n;
    } else if rest.starts_with("inode(s) failed to be saved") {
        report.failed_inodes = n;
    } else if rest.starts_with("inode(s) changed at the moment of the backup") {
        report.changed_inodes = n;
    } else if rest.starts_with("inode(s) recorded as deleted") {
        report.deleted_recorded = n;
    }
}

fn parse_listing(out: &mut dyn BufRead, on_entry: &mut dyn FnMut(Entry)) -> Result<()> {
    let mut reader = quick_xml::Reader::from_reader(out);
    let mut buf = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    // The entry whose <Attributes/> comes next, and whether it is a directory.
    let mut pending: Option<(Entry, bool)> = None;
    let bad = |e: &dyn std::fmt::Display| Error::Failed(format!("unreadable dar listing: {e}"));
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| bad(&e))?;
        match event {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == "Attributes" => {
                if let Some((mut entry, has_crc)) = pending.take() {
                    for a in e.attributes().flatten() {
                        let v = attribute(&a).map_err(|e| bad(&e))?;
                        match a.key.as_ref() {
                            "data" => entry.data = data_state(&v),
                            "mtime" => entry.mtime = v.parse().unwrap_or(0),
                            // " drwxr-xr-x", "*-rw-r--r--" (a hard link): the mode is the
                            // last ten characters.
                            "permissions" => {
                                entry.mode =
                                    v.get(v.len().saturating_sub(10)..).and_then(parse_mode)
                            }
                            _ => {}
                        }
                    }
                    if entry.data == DataState::Referenced && has_crc {
                        entry.data = DataState::Saved;
                    }
                    on_entry(entry);
                }
            }
            Event::Start(e) => {
                if let Some(started) = start_entry(&e, &dirs).map_err(|e| bad(&e))? {
                    if started.0.kind == EntryKind::Directory {
                        dirs.push(started.0.path.clone());
                    }
                    pending = Some(started);
                }
            }
            Event::Empty(e) => {
                // An element without children has no <Attributes/>: report it as it stands.
                if let Some((entry, _)) = start_entry(&e, &dirs).map_err(|e| bad(&e))? {
                    on_entry(entry);
                }
            }
            Event::End(e) if e.name().as_ref() == "Directory" => {
                dirs.pop();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(())
}

/// An entry element (anything but Catalog and Attributes) begins; with whether it carries
/// what only data stored in this archive has (a CRC, a symlink's target).
fn start_entry(
    e: &BytesStart,
    dirs: &[String],
) -> std::result::Result<Option<(Entry, bool)>, String> {
    let kind = match e.name().as_ref() {
        "Catalog" | "Attributes" => return Ok(None),
        "Directory" => EntryKind::Directory,
        "File" => EntryKind::File,
        "Symlink" => EntryKind::Symlink,
        _ => EntryKind::Other,
    };
    let mut name = None;
    let mut size = 0;
    let mut dirty = false;
    let mut has_crc = false;
    for a in e.attributes().flatten() {
        let v = attribute(&a)?;
        match a.key.as_ref() {
            "name" => name = Some(v),
            // Only data stored in this archive has a CRC; only a symlink saved here its target.
            "crc" | "target" => has_crc |= !v.is_empty(),
            "size" => size = v.parse().unwrap_or(0),
            "dirty" => dirty = v == "yes",
            _ => {}
        }
    }
    let name = name.ok_or("an entry without a name")?;
    let path = match dirs.last() {
        Some(parent) => format!("{parent}/{name}"),
        None => name,
    };
    Ok(Some((
        Entry {
            path,
            kind,
            data: DataState::Other,
            size,
            mtime: 0,
            mode: None,
            dirty,
        },
        has_crc,
    )))
}

/// An attribute's text with entities resolved but without XML's whitespace normalization:
/// dar writes names raw, and a newline in a file name must stay a newline.
fn attribute(a: &quick_xml::events::attributes::Attribute) -> std::result::Result<String, String> {
    quick_xml::escape::unescape(&a.value)
        .map(|v| v.into_owned())
        .map_err(|e| e.to_string())
}

/// "drwxr-sr-t" as mode bits (0o3755); None for anything else.
fn parse_mode(text: &str) -> Option<u32> {
    let b = text.as_bytes();
    if b.len() != 10 || !b"-dlcbps".contains(&b[0]) {
        return None;
    }
    let mut mode = 0;
    for (i, &c) in b[1..].iter().enumerate() {
        let shift = 8 - i as u32;
        // set-uid, set-gid (s, S), sticky (t, T): in the execute column of user, group and
        // others.
        let special = 1 << (11 - i / 3);
        let marks = if i == 8 { (b't', b'T') } else { (b's', b'S') };
        mode |= match (i % 3, c) {
            (0, b'r') | (1, b'w') | (2, b'x') => 1 << shift,
            (2, c) if c == marks.0 => (1 << shift) | special,
            (2, c) if c == marks.1 => special,
            (_, b'-') => 0,
            _ => return None,
        };
    }
    Some(mode)
}

fn data_state(v: &str) -> DataState {
    match v {
        "saved" => DataState::Saved,
        "referenced" => DataState::Referenced,
        "inode-only" => DataState::InodeOnly,
        "deleted" => DataState::Deleted,
        _ => DataState::Other,
    }
}

/// A dar run that must exit 0. With a key, dar's "elastic buffer incoherent structure" means
/// it could not decrypt: said as a wrong passphrase, not as dar's words.
fn judge(finished: Finished, key: Option<&Passphrase>) -> Result<Finished> {
    if finished.code() == Some(0) {
        Ok(finished)
    } else {
        Err(failure(&finished, key))
    }
}

/// What dar says when a key does not decrypt an archive: which of them depends on the bytes
/// the wrong key produces (both seen with dar 2.7.8 on the same archive and key).
const UNDECIPHERABLE: &[&str] = &["elastic buffer", "cannot decrypt data"];

fn failure(finished: &Finished, key: Option<&Passphrase>) -> Error {
    let undecipherable = UNDECIPHERABLE.iter().any(|m| finished.stderr.contains(m));
    match key {
        Some(key) if undecipherable => Error::WrongPassphrase {
            definition: key.definition().to_owned(),
        },
        _ => finished.failure(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_dar_could_not_restore_are_named_with_why() {
        let out = "Error while restoring /t/r/fifo : Could not create inode: /t/r/fifo : Input/output error\n\
                   Error while restoring /t/r/a b/link : Could not create inode: /t/r/a b/link : Function not implemented\n\
                   \n 3 inode(s) restored\n";
        assert_eq!(
            not_restored(out, Path::new("/t/r")),
            vec![
                NotRestored {
                    path: "fifo".into(),
                    reason: "Could not create inode: Input/output error".into()
                },
                NotRestored {
                    path: "a b/link".into(),
                    reason: "Could not create inode: Function not implemented".into()
                },
            ]
        );
    }

    const LISTING: &str = r#"<?xml version="1.0" ?>
<!DOCTYPE Catalog SYSTEM "dar-catalog.dtd">
<Catalog format="1.2">
<Directory name="d1">
<Attributes data="referenced" metadata="absent" user="root" group="root" permissions=" drwxr-xr-x" atime="1" mtime="2" ctime="3" />
	<File name="big.bin" size="300000" stored="300000" crc="fa04633e" dirty="no" sparse="no" delta_sig="no" patch_base_crc="" patch_result_crc="">
	<Attributes data="saved" metadata="absent" user="root" group="root" permissions=" -rw-r--r--" atime="1577836800" mtime="1577836800" ctime="1795564815" />
	</File>
</Directory>
<File name="unchanged" size="8" stored="" crc="" dirty="no">
<Attributes data="referenced" metadata="absent" user="root" group="root" permissions=" -rw-r--r--" atime="1" mtime="2" ctime="3" />
</File>
<File name="in-catalogue" size="8" stored="" crc="0d4a1185" dirty="no">
<Attributes data="referenced" metadata="absent" user="root" group="root" permissions=" -rw-r--r--" atime="1" mtime="2" ctime="3" />
</File>
<File name="chmod" size="8" stored="" crc="" dirty="no">
<Attributes data="inode-only" metadata="absent" user="root" group="root" permissions=" -rw-------" atime="1" mtime="2" ctime="3" />
</File>
<File name="we ird$&amp;;|&apos;&quot;name">
<Attributes data="deleted" metadata="absent" user="" group="" permissions="" atime="" mtime="1795564815" ctime="" />
</File>
<Symlink name="sym" target="">
<Attributes data="referenced" metadata="absent" user="root" group="root" permissions=" lrwxrwxrwx" atime="1" mtime="2" ctime="3" />
</Symlink>
<Symlink name="sym2" target="elsewhere">
<Attributes data="referenced" metadata="absent" user="root" group="root" permissions=" lrwxrwxrwx" atime="1" mtime="2" ctime="3" />
</Symlink>
</Catalog>"#;

    #[test]
    fn parses_paths_states_and_escapes() {
        let mut entries = Vec::new();
        parse_listing(&mut LISTING.as_bytes(), &mut |e| entries.push(e)).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| (e.path.as_str(), e.data)).collect();
        assert_eq!(
            paths,
            [
                ("d1", DataState::Referenced),
                ("d1/big.bin", DataState::Saved),
                ("unchanged", DataState::Referenced),
                ("in-catalogue", DataState::Saved),
                ("chmod", DataState::InodeOnly),
                ("we ird$&;|'\"name", DataState::Deleted),
                ("sym", DataState::Referenced),
                ("sym2", DataState::Saved),
            ]
        );
        assert_eq!(entries[1].size, 300000);
        assert_eq!(entries[1].mtime, 1577836800);
    }

    #[test]
    fn reads_slice_ranges() {
        let line = |r: &str| format!("All displayed files have their data in slice range [{r}]");
        let set = |s: &[u32]| Some(s.iter().copied().collect::<BTreeSet<u32>>());
        assert_eq!(parse_slice_ranges(&line("3-5")), set(&[3, 4, 5]));
        assert_eq!(parse_slice_ranges(&line("1,10-12")), set(&[1, 10, 11, 12]));
        assert_eq!(parse_slice_ranges(&line("2")), set(&[2]));
        assert_eq!(parse_slice_ranges(&line("")), set(&[]));
        assert_eq!(parse_slice_ranges("-----"), None);
    }

    #[test]
    fn a_path_own_slices_and_mode_from_a_slicing_listing() {
        let listing = "Slice(s)|[Data ][D][ EA  ][FSA][Compr][S]|Permission| Filemane\n\
            --------+--------------------------------+----------+---------------\n\
            2\t [InRef][-]       [-L-][   0%][ ] drwxr-x--- photos\n\
            3-4\t [InRef][-]       [-L-][     ][ ] drwxr-xr-x photos/2011 a\n\
            1\t [InRef][ ]       [-L-][-----][ ]*-rw-r--r-- photos/2011 a/IMG 1.jpg\n\
            \t [InRef][-]       [---][-----][ ] lrwxrwxrwx photos/link\n\
            -----\n\
            All displayed files have their data in slice range [1-4]\n";
        let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(
            slices_of_row(listing, "photos/2011 a/IMG 1.jpg"),
            Some(set(&[1]))
        );
        assert_eq!(slices_of_row(listing, "photos/2011 a"), Some(set(&[3, 4])));
        assert_eq!(slices_of_row(listing, "photos"), Some(set(&[2])));
        assert_eq!(slices_of_row(listing, "photos/link"), Some(set(&[])));
        assert_eq!(slices_of_row(listing, "1.jpg"), None);
        assert_eq!(slices_of_row(listing, "elsewhere"), None);
        assert_eq!(parse_mode("drwxr-x---"), Some(0o750));
        assert_eq!(parse_mode("-rwsr-sr-t"), Some(0o7755));
        assert_eq!(parse_mode("drwxrwxrwT"), Some(0o1776));
        assert_eq!(parse_mode("-rw-r--r--x"), None);
        assert_eq!(parse_mode("?rw-r--r--"), None);
        assert_eq!(parse_mode("-rwtr--r--"), None);
    }

    #[test]
    fn reads_dar_counters() {
        let mut r = CreateReport::default();
        for l in [
            " 6 inode(s) saved",
            " 2 inode(s) failed to be saved (filesystem error)",
        ] {
            parse_counter(l, &mut r);
        }
        assert_eq!((r.saved_inodes, r.failed_inodes), (6, 2));
    }
}
