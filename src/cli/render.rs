//! Human-readable reports on stdout (`--json` prints the same reports as JSON instead).

use darvault::audit;
use darvault::backup::{self, Outcome};
use darvault::config::human_bytes;
use darvault::list::Listing;
use darvault::replicate;

pub fn json<T: serde::Serialize>(value: &T) {
    let text = serde_json::to_string_pretty(value).expect("reports serialize");
    println!("{}", darvault::secrets::mask(&text));
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
                println!(
                    "{}: published {} — {}, {} slice(s), {} files saved, {:.1}s ({})",
                    d.definition,
                    s.set,
                    human_bytes(s.size),
                    s.slices,
                    s.saved_files,
                    s.seconds,
                    phases.join(", ")
                );
                let rt = &s.restore_test;
                if rt.outcome == "nothing eligible" {
                    println!(
                        "  restore test: no file stored in this archive was eligible for sampling"
                    );
                } else {
                    println!(
                        "  restore test {}: {} of {} eligible files compared with the source",
                        rt.outcome, rt.compared, rt.eligible
                    );
                }
                for w in &s.warnings {
                    println!("  warning: {w}");
                }
            }
            Outcome::Failed { error, .. } => println!("{}: FAILED: {error}", d.definition),
        }
    }
    let published = report
        .definitions
        .iter()
        .filter(|d| matches!(d.result, Outcome::Published(_)))
        .count();
    println!(
        "{} backup: {published} of {} definition(s) published",
        report.level,
        report.definitions.len()
    );
}

pub fn listing(listing: &Listing) {
    if listing.definitions.is_empty() {
        println!("no sets in {}", listing.copy);
    }
    for d in &listing.definitions {
        println!("{}  (in {})", d.definition, listing.copy);
        for s in &d.sets {
            let indent = match s.level.as_str() {
                "FULL" => "",
                "DIFF" => "  ",
                _ => "    ",
            };
            println!(
                "  {indent}{:<40} {:>10}  {} slice(s)  created {}",
                s.name,
                human_bytes(s.size),
                s.slices,
                s.created
            );
        }
        for p in &d.problems {
            println!("  ! {p}");
        }
    }
}

pub fn replicate(report: &replicate::Report) {
    for d in &report.destinations {
        match &d.result {
            replicate::Outcome::Done(s) => {
                println!(
                    "{}: {} set(s) sent ({} files, {}), {} already there, {:.1}s",
                    d.destination,
                    s.sent.len(),
                    s.files_sent,
                    human_bytes(s.bytes_sent),
                    s.present,
                    s.seconds
                );
                for name in &s.sent {
                    println!("  sent {name}");
                }
            }
            replicate::Outcome::Failed { error, .. } => {
                println!("{}: FAILED: {error}", d.destination)
            }
        }
    }
}

pub fn audit(report: &audit::Report) {
    for c in &report.copies {
        if let Some(e) = &c.error {
            println!("{}: FAILED: {e}", c.copy);
            continue;
        }
        let tally: Vec<String> = audit::tally(c)
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        let bytes: u64 = c.sets.iter().map(|s| s.bytes_checked).sum();
        println!(
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
        for s in &c.sets {
            if s.status != audit::Status::Ok
                || !s.files.is_empty()
                || !s.deep.is_empty()
                || s.chain_broken.is_some()
            {
                println!("  {} [{}]", s.location, s.status.as_str());
            }
            if let Some(broken) = &s.chain_broken {
                println!("    chain broken: {broken}");
            }
            for f in &s.files {
                let from = f
                    .repaired_from
                    .as_deref()
                    .map(|r| format!(", repaired from {r}"))
                    .unwrap_or_default();
                println!("    {}: {} -> {}{from}", f.path, f.found, f.status.as_str());
            }
            for d in &s.deep {
                println!("    {d}");
            }
        }
        for p in &c.problems {
            println!("  ! {p}");
        }
    }
}

pub fn restore(report: &darvault::restore::Report) {
    println!(
        "restored {} as of {} from {} into {} ({:.1}s): {}",
        report.definition,
        report.as_of,
        report.copy,
        report.target.display(),
        report.seconds,
        report.applied.join(" + ")
    );
    if report.applied.len() < report.chain.len() {
        println!(
            "  {} of the chain's {} sets held the requested paths",
            report.applied.len(),
            report.chain.len()
        );
    }
    if report.downloaded_bytes > 0 {
        println!(
            "  downloaded {:.1} MiB",
            report.downloaded_bytes as f64 / (1 << 20) as f64
        );
    }
    for p in &report.absent {
        println!("  {p}: absent as of that time (deleted before, or never backed up)");
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
        println!(
            "{:>12}  {}  {}  [{}]",
            e.size,
            local_time(e.mtime),
            e.path,
            e.set
        );
    }
    println!(
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
        let what = match v.recorded.state.as_str() {
            "deleted" => "deleted".to_owned(),
            "metadata" => "metadata changed".to_owned(),
            _ => format!(
                "{} bytes, modified {}",
                v.recorded.size,
                local_time(v.recorded.mtime)
            ),
        };
        println!("{}  {}  {what}  [{}]", v.created, v.recorded.path, v.set);
    }
    println!(
        "{} version(s) matching {:?} on {}",
        found.versions.len(),
        found.pattern,
        found.copy
    );
}

pub fn drill(report: &darvault::restore::drill::Report) {
    for d in &report.drills {
        println!(
            "{}: drill of {} with its bundled dar_static {} ({:.1}s)",
            d.definition, d.set, d.dar_version, d.seconds
        );
        for f in &d.files {
            let mark = if f.ok { "ok" } else { "FAILED" };
            println!("  {mark}  {} ({} bytes): {}", f.path, f.size, f.result);
        }
        match &d.failure {
            None => println!("  passed: this copy restores on a bare machine"),
            Some(e) => println!("  FAILED: {e}"),
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
                (Some(why), _) => println!("{}: kept {} ({size}): {why}", c.copy, r.set),
                (None, true) => println!("{}: {verb} {} ({size}): {}", c.copy, r.set, r.reason),
                (None, false) => {}
            }
        }
        for l in &c.leftovers {
            println!("{}: {verb} leftover {l}", c.copy);
        }
        if let Some(e) = &c.error {
            println!("{}: FAILED: {e}", c.copy);
        }
        println!("{}: {} set(s) kept", c.copy, c.kept);
    }
    println!(
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
    for d in &status.definitions {
        println!("{}: {} set(s) in the repository", d.name, d.sets.len());
        for (level, run) in &d.last {
            println!(
                "  last {level}: {} {} ({:.1}s, {})",
                local_time(run.started_at.as_second()),
                run.outcome,
                run.seconds,
                human_bytes(run.bytes)
            );
        }
        if let Some(f) = &d.last_failure {
            println!("  last failure: {}", local_time(f.started_at.as_second()));
        }
    }
    for c in &status.copies {
        if let Some(e) = &c.error {
            println!("{} ({}): UNREADABLE: {e}", c.name, c.kind);
            continue;
        }
        let free = c
            .free_bytes
            .map_or(String::new(), |b| format!(", {} free", human_bytes(b)));
        println!(
            "{} ({}): {} set(s), {}{free}",
            c.name,
            c.kind,
            c.sets,
            human_bytes(c.bytes)
        );
        if !c.missing.is_empty() {
            println!(
                "  lacks {} set(s) of the repository: run darvault replicate",
                c.missing.len()
            );
        }
        if !c.never_proven.is_empty() {
            println!(
                "  {} set(s) never proven here: run darvault audit",
                c.never_proven.len()
            );
        }
        if let Some((set, when)) = &c.oldest_proof {
            println!("  oldest proof: {} ({set})", local_time(when.as_second()));
        }
    }
}

pub fn units(units: &Vec<darvault::systemd::Unit>) {
    for u in units {
        println!("# ==> {} <==\n{}", u.name, u.text);
    }
    println!("# Install them with: darvault systemd --install");
}

pub fn installed(installed: &darvault::systemd::Installed) {
    println!(
        "wrote {} units to {}\n{}",
        installed.units.len(),
        installed.dir.display(),
        installed.next
    );
}
