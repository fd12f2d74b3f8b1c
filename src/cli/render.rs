//! Human-readable reports on stdout (`--json` prints the same reports as JSON instead).

use darvault::audit;
use darvault::backup::{self, Outcome};
use darvault::config::human_bytes;
use darvault::list::Listing;
use darvault::replicate;
use darvault::set::manifest::RestoreTestOutcome;

/// A line for the terminal: names from copies may hold control characters (escape
/// sequences, newlines); they are shown escaped, as `ls -b` does.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::render::line(&darvault::printable(&format!($($arg)*)))
    };
}

/// A failure in a report: its line on stdout with the rest of the report, and on stderr too,
/// where errors are looked for (a cron mail, a log of stderr).
macro_rules! fail {
    ($($arg:tt)*) => {{
        let text = darvault::printable(&format!($($arg)*)).into_owned();
        $crate::cli::render::line(&text);
        eprintln!("darvault: {text}");
    }};
}

/// One line on stdout. A reader that went away (`| head`) ends the program quietly with
/// exit 0, as other Unix tools do.
pub fn line(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}") {
        quiet_exit_on_closed(&e);
    }
}

/// Exit 0 when `e` says stdout was closed by its reader.
pub fn quiet_exit_on_closed(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
}

pub fn json<T: serde::Serialize>(value: &T) {
    let text = serde_json::to_string_pretty(value).expect("reports serialize");
    line(&darvault::secrets::mask(&text));
}

pub fn backup(report: &backup::Report) {
    for d in &report.definitions {
        match &d.result {
            Outcome::Published(s) => {
                let phases: Vec<String> = s
                    .phases
                    .iter()
                    .map(|(name, secs)| format!("{name} {secs:.1}s"))
                    .collect();
                say!(
                    "{}: published {} — {}, {} slice(s), {} file(s) saved, {:.1}s ({})",
                    d.definition,
                    s.set,
                    human_bytes(s.size),
                    s.slices,
                    s.saved_files,
                    s.seconds,
                    phases.join(", ")
                );
                let rt = &s.restore_test;
                if let Some(partial) = &rt.partial {
                    say!("  restore test {} in part: {partial}", rt.outcome);
                } else if rt.outcome == RestoreTestOutcome::NothingEligible {
                    say!(
                        "  restore test: not tested: no file stored in this archive fits the sample (restore_test min_size, max_size, partial_max_size, exclusions)"
                    );
                } else if rt.outcome == RestoreTestOutcome::NotTested {
                    say!(
                        "  restore test: not tested: every sampled file changed in the source after the backup started"
                    );
                } else {
                    say!(
                        "  restore test {}: {} of {} eligible files compared with the source",
                        rt.outcome,
                        rt.compared,
                        rt.eligible
                    );
                }
                if let Some(tools) = &s.tools {
                    for kept in &tools.kept_from_older_set {
                        say!(
                            "  note: {}; this set carries them again from an older set of its chain",
                            kept.why.describe(kept.architecture)
                        );
                    }
                }
                if let Some(tools) = &s.tools
                    && !tools.left_out.is_empty()
                {
                    let carried: Vec<&str> =
                        tools.architectures.iter().map(|a| a.as_str()).collect();
                    for left in &tools.left_out {
                        say!(
                            "  note: this chain's tools are carried for {} only: {}",
                            carried.join(" and "),
                            left.why.describe(left.architecture)
                        );
                    }
                }
                // The whole list is in --json and in the set's manifest.
                const SHOWN: usize = 20;
                for w in s.warnings.iter().take(SHOWN) {
                    say!("  warning: {w}");
                }
                if s.warnings.len() > SHOWN {
                    say!(
                        "  … and {} more warnings (all of them: --json, or [checks] not_saved in {}'s MANIFEST.toml)",
                        s.warnings.len() - SHOWN,
                        s.set
                    );
                }
            }
            Outcome::Failed { error, .. } => fail!("{}: FAILED: {error}", d.definition),
        }
    }
    let published = report
        .definitions
        .iter()
        .filter(|d| matches!(d.result, Outcome::Published(_)))
        .count();
    say!(
        "{} backup: {published} of {} definition(s) published",
        report.level,
        report.definitions.len()
    );
}

pub fn listing(listing: &Listing) {
    if listing.definitions.is_empty() {
        say!("no sets in {}", listing.copy);
    }
    for d in &listing.definitions {
        say!("{}  (in {})", d.definition, listing.copy);
        for s in &d.sets {
            let indent = match s.level.as_str() {
                "FULL" => "",
                "DIFF" => "  ",
                _ => "    ",
            };
            say!(
                "  {indent}{:<40} {:>10}  {} slice(s)  created {}",
                s.name,
                human_bytes(s.size),
                s.slices,
                s.created
            );
        }
        for p in &d.problems {
            say!("  ! {p}");
        }
    }
}

pub fn replicate(report: &replicate::Report) {
    for d in &report.destinations {
        match &d.result {
            replicate::Outcome::Done(s) => {
                say!(
                    "{}: {} set(s) sent ({} files, {}), {} already there, {:.1}s",
                    d.destination,
                    s.sent.len(),
                    s.files_sent,
                    human_bytes(s.bytes_sent),
                    s.present,
                    s.seconds
                );
                for name in &s.sent {
                    say!("  sent {name}");
                }
                if s.locks_renewed > 0 {
                    say!(
                        "  locks checked and lengthened where due: {} set(s)",
                        s.locks_renewed
                    );
                }
                if s.locks_not_renewed > 0 {
                    say!(
                        "  warning: the locks of {} set(s) could not be lengthened (see the log)",
                        s.locks_not_renewed
                    );
                }
            }
            replicate::Outcome::Failed { error, .. } => {
                fail!("{}: FAILED: {error}", d.destination)
            }
        }
    }
}

pub fn audit(report: &audit::Report) {
    for c in &report.copies {
        if let Some(e) = &c.error {
            fail!("{}: FAILED: {e}", c.copy);
            continue;
        }
        let tally: Vec<String> = audit::tally(c)
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        let bytes: u64 = c.sets.iter().map(|s| s.bytes_checked).sum();
        say!(
            "{}: {} set(s) audited ({}), {}",
            c.copy,
            c.sets.len(),
            human_bytes(bytes),
            if tally.is_empty() {
                "nothing to audit".to_owned()
            } else {
                tally.join(", ")
            }
        );
        if let Some(proof) = &c.proof {
            say!(
                "  proven: {} file(s) by the server's SHA-256 (kept, or computed there), {} downloaded",
                proof.files_vouched_by_server,
                human_bytes(proof.bytes_downloaded)
            );
        }
        for s in &c.sets {
            if s.status != audit::Status::Ok
                || !s.files.is_empty()
                || !s.deep.is_empty()
                || s.chain_broken.is_some()
            {
                say!("  {} [{}]", s.location, s.status.as_str());
            }
            if let Some(broken) = &s.chain_broken {
                say!("    chain broken: {broken}");
            }
            for f in &s.files {
                match f.repaired_from.as_deref() {
                    Some(from) => say!("    {}: {} -> repaired from {from}", f.path, f.found),
                    None => say!("    {}: {} -> {}", f.path, f.found, f.status.as_str()),
                }
            }
            for d in &s.deep {
                say!("    {}", deep_line(d));
            }
        }
        for p in &c.problems {
            say!("  ! {p}");
        }
    }
}

/// One deep check as a line: what ran, then its verdict.
fn deep_line(d: &audit::DeepCheck) -> String {
    let what = match &d.check {
        audit::DeepKind::Par2Verify { index } => format!("par2 verify {index}"),
        audit::DeepKind::DarTest { dar: Some(dar) } => format!("dar -t ({dar})"),
        audit::DeepKind::DarTest { dar: None } => "dar -t".to_owned(),
    };
    let detail = d.detail.as_deref().unwrap_or("");
    match d.verdict {
        audit::DeepVerdict::Passed => format!("{what}: ok"),
        audit::DeepVerdict::Failed => format!("{what}: FAILED ({detail})"),
        audit::DeepVerdict::NotRun => format!("{what}: not run ({detail})"),
    }
}

pub fn restore(report: &darvault::restore::Report) {
    if report.applied.is_empty() {
        say!(
            "nothing restored: none of the paths existed in {} as of {}",
            report.definition,
            report.as_of
        );
        for p in &report.absent {
            say!("  {p}: absent as of that time (deleted before, or never backed up)");
        }
        return;
    }
    say!(
        "restored {} as of {} from {} into {} ({:.1}s): {}",
        report.definition,
        report.as_of,
        report.copy,
        report.target.display(),
        report.seconds,
        report.applied.join(" + ")
    );
    if report.applied.len() < report.chain.len() {
        say!(
            "  {} of the chain's {} sets held the requested paths",
            report.applied.len(),
            report.chain.len()
        );
    }
    if report.downloaded_bytes > 0 {
        say!(
            "  downloaded {:.1} MiB",
            report.downloaded_bytes as f64 / (1 << 20) as f64
        );
    }
    for p in &report.absent {
        say!("  {p}: absent as of that time (deleted before, or never backed up)");
    }
    if !report.not_restored.is_empty() {
        say!(
            "  {} file(s) could not be written into {} (every other file's data was restored):",
            report.not_restored.len(),
            report.target.display()
        );
        for f in &report.not_restored {
            say!("    {}: {}", f.path, f.reason);
        }
    }
    if let Some(newer) = &report.newer_elsewhere {
        say!(
            "  warning: the repository holds a newer set, {newer}, that {} lacks: this restore is older than the newest backup (replicate, or restore --from the repository)",
            report.copy
        );
    }
}

fn local_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

pub fn as_of_listing(listing: &darvault::restore::Listing) {
    for e in &listing.entries {
        // A folder ends with '/' (it has no size; its set is the newest that lists it).
        let slash = match e.kind {
            darvault::state::PathKind::Folder => "/",
            _ => "",
        };
        say!(
            "{:>12}  {}  {}{slash}  [{}]",
            e.size,
            local_time(e.mtime),
            e.path,
            e.set
        );
    }
    say!(
        "{} entries of {} as of {} on {} ({})",
        listing.entries.len(),
        listing.definition,
        listing.as_of,
        listing.copy,
        listing.chain.join(" + ")
    );
}

pub fn found(found: &darvault::restore::Found) {
    for v in &found.versions {
        let what = match v.recorded.state {
            darvault::state::RecordState::Deleted => "deleted".to_owned(),
            darvault::state::RecordState::Metadata => "metadata changed".to_owned(),
            _ => format!(
                "{} bytes, modified {}",
                v.recorded.size,
                local_time(v.recorded.mtime)
            ),
        };
        say!("{}  {}  {what}  [{}]", v.created, v.recorded.path, v.set);
    }
    say!(
        "{} version(s) matching {:?} on {}",
        found.versions.len(),
        found.pattern,
        found.copy
    );
}

pub fn drill(report: &darvault::restore::drill::Report) {
    for d in &report.drills {
        if d.dar_version.is_empty() {
            say!(
                "{}: drill of {}: its bundled dar_static did not run ({:.1}s)",
                d.definition,
                d.set,
                d.seconds
            );
        } else {
            say!(
                "{}: drill of {} with its bundled dar_static {} ({:.1}s)",
                d.definition,
                d.set,
                d.dar_version,
                d.seconds
            );
        }
        if !d.dar.is_empty() {
            say!("  ran {}", d.dar);
        }
        for f in &d.files {
            let mark = if f.ok { "ok" } else { "FAILED" };
            say!("  {mark}  {} ({} bytes): {}", f.path, f.size, f.result);
        }
        match &d.failure {
            None => say!("  passed: this copy restores on a bare machine"),
            Some(e) => fail!("  {}: FAILED: {e}", d.definition),
        }
    }
}

pub fn cleanup(report: &darvault::cleanup::Report) {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for c in &report.copies {
        for r in &c.removals {
            let size = darvault::config::human_bytes(r.bytes);
            match (&r.refused, r.removed || report.dry_run) {
                (Some(why), _) => say!("{}: kept {} ({size}): {why}", c.copy, r.set),
                (None, true) => say!("{}: {verb} {} ({size}): {}", c.copy, r.set, r.reason),
                (None, false) => {}
            }
        }
        for l in &c.leftovers {
            say!("{}: {verb} leftover {l}", c.copy);
        }
        if let Some(e) = &c.error {
            fail!("{}: FAILED: {e}", c.copy);
        }
        say!("{}: {} set(s) kept", c.copy, c.kept);
    }
    say!(
        "{verb} {} in all{}",
        darvault::config::human_bytes(report.freed_bytes()),
        if report.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    );
}

pub fn status(status: &darvault::status::Status) {
    use darvault::config::human_bytes;
    for r in &status.rules {
        rule(r);
    }
    if !status.rules.is_empty() {
        say!("");
    }
    for d in &status.definitions {
        say!("{}: {} set(s) in the repository", d.name, d.sets.len());
        for (level, run) in d.last_in_chain_order() {
            say!(
                "  last {level}: {} {} ({:.1}s, {})",
                local_time(run.started_at.as_second()),
                run.outcome,
                run.seconds,
                human_bytes(run.bytes)
            );
        }
        if let Some(f) = &d.last_failure {
            say!("  last failure: {}", local_time(f.started_at.as_second()));
        }
    }
    for c in &status.copies {
        if let Some(e) = &c.error {
            say!("{} ({}): UNREADABLE: {e}", c.name, c.kind);
            continue;
        }
        let free = c
            .free_bytes
            .map_or(String::new(), |b| format!(", {} free", human_bytes(b)));
        say!(
            "{} ({}): {} set(s), {}{free}",
            c.name,
            c.kind,
            c.sets,
            human_bytes(c.bytes)
        );
        if !c.missing.is_empty() {
            say!(
                "  lacks {} set(s) of the repository: run darvault replicate",
                c.missing.len()
            );
        }
        if !c.never_proven.is_empty() {
            say!(
                "  {} set(s) never proven here: run darvault audit",
                c.never_proven.len()
            );
        }
        if let Some((set, when)) = &c.oldest_proof {
            say!("  oldest proof: {} ({set})", local_time(when.as_second()));
        }
        if let Some(r) = &c.read_back {
            read_back(r);
        }
        if c.keeps_versions == Some(false) {
            say!(
                "  warning: the bucket keeps no older versions: a file deleted or overwritten there (by another tool, or by someone holding your keys) cannot be healed from its history; turn versioning on (object lock also keeps them from deletion)"
            );
        }
    }
}

/// A copy's read budget: when its least recently read byte was read, and whether the
/// budget keeps up.
fn read_back(r: &darvault::status::ReadBack) {
    if let Some(when) = r.least_recently_read {
        let days = (jiff::Timestamp::now().as_second() - when.as_second()).max(0) / 86_400;
        say!(
            "  least recently read byte: {days} day(s) ago (read back within {} days)",
            r.every_days
        );
    }
    if !r.covers() {
        say!(
            "  warning: read_budget {} a month cannot read this copy every {} days: {} a month needed",
            human_bytes(r.budget_per_month),
            r.every_days,
            human_bytes(r.needed_per_month)
        );
    }
}

/// One definition's backup rule: a line of its parts, then what to do where it fails.
fn rule(r: &darvault::status::rule::RuleStatus) {
    let errors = match r.errors.need {
        0 => r.errors.have.to_string(),
        allowed => format!("{}/{allowed}", r.errors.have),
    };
    say!(
        "{}  {} {}  copies {}/{} · media {}/{} · offsite {}/{} · offline-or-immutable {}/{} · errors {errors}",
        r.definition,
        r.rule,
        if r.holds { "✓" } else { "✗" },
        r.copies.have,
        r.copies.need,
        r.media.have,
        r.media.need,
        r.offsite.have,
        r.offsite.need,
        r.offline_or_immutable.have,
        r.offline_or_immutable.need,
    );
    for advice in &r.advice {
        say!("  → {}", advice_text(advice));
    }
}

fn advice_text(advice: &darvault::status::rule::Advice) -> String {
    use darvault::status::rule::Advice;
    match advice {
        Advice::Backup => "make a first backup: darvault backup --full".into(),
        Advice::Replicate { copy } => {
            format!("replicate to {copy}: it lacks the newest chain (darvault replicate --to {copy})")
        }
        Advice::Audit {
            copy,
            proven_days_ago: Some(days),
        } => format!("audit {copy}: last proven {days} days ago (darvault audit {copy})"),
        Advice::Audit {
            copy,
            proven_days_ago: None,
        } => format!("audit {copy}: the newest chain was never proven there (darvault audit {copy})"),
        Advice::Repair { copy, sets } => {
            format!("repair {copy}: {sets} damaged set(s) (darvault audit {copy} --repair)")
        }
        Advice::Unreachable { copy } => {
            format!("{copy} could not be read now: weighed by what darvault last knew of it")
        }
        Advice::AddCopies { more } => format!(
            "add {more} more cop{} (a [[destination]]: a USB disk, a server, a cloud bucket)",
            if *more == 1 { "y" } else { "ies" }
        ),
        Advice::AnotherMedia => {
            "keep a copy on another kind of media (a removable disk, a server, a cloud bucket)".into()
        }
        Advice::AnOffsiteCopy => {
            "keep a copy offsite (a cloud bucket, or a disk kept elsewhere: offsite = true)".into()
        }
        Advice::AnOfflineOrImmutableCopy => "keep a copy offline or immutable (a USB disk unplugged between runs: require_mount = true; or immutable = true where the server enforces it)".into(),
    }
}

pub fn units(units: &Vec<darvault::systemd::Unit>) {
    for u in units {
        say!("# ==> {} <==\n{}", u.name, u.text);
    }
    say!("# Install them with: darvault systemd --install");
}

pub fn installed(installed: &darvault::systemd::Installed) {
    say!(
        "wrote {} units to {}\n{}",
        installed.units.len(),
        installed.dir.display(),
        installed.next
    );
}
