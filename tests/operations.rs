//! Unattended operation: retention, notifications, systemd units, status and completions.

mod common;

use std::fs;

use common::*;

fn definition(env: &Env, extra: &str) {
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\n{extra}",
        env.path("src").display().to_string()
    ));
}

#[test]
fn cleanup_keeps_the_policy_and_every_dependency_and_asks_before_a_full() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    // Everything expires at once: only chains and confirmations keep sets.
    let keep = "[definition.keep]\nfull = \"0d\"\ndiff = \"0d\"\nincr = \"0d\"\n";
    definition(&env, keep);
    for level in ["--full", "--diff", "--full", "--incr"] {
        assert_eq!(code(&env.run(&["backup", level])), 0);
    }
    let before = env.sets("docs");
    let names: Vec<String> = before.iter().map(|p| name_of(p)).collect();
    // A stray par2 leftover and a staging folder of an interrupted run.
    fs::write(before[3].join("SHA256SUMS.1"), b"junk").unwrap();
    let par2_leftover = before[3].join(format!("{}.1.dar.1", names[3]));
    fs::write(&par2_leftover, b"junk").unwrap();
    fs::create_dir_all(env.repo().join("docs/.staging.docs_FULL_x")).unwrap();

    // Dry run: says what would go and frees, changes nothing.
    let out = env.run(&["--json", "cleanup", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removals = report["copies"][0]["removals"].as_array().unwrap();
    let planned: Vec<&str> = removals
        .iter()
        .map(|r| r["set"].as_str().unwrap())
        .collect();
    assert_eq!(planned, [names[0].as_str(), names[1].as_str()]);
    assert_eq!(env.sets("docs"), before);
    assert!(par2_leftover.exists());

    // No terminal and no --yes: the DIFF goes, the old FULL stays (refused, said why).
    let out = env.run(&["cleanup"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("--yes"), "{}", stdout(&out));
    let after: Vec<String> = env.sets("docs").iter().map(|p| name_of(p)).collect();
    assert_eq!(
        after,
        [names[0].clone(), names[2].clone(), names[3].clone()]
    );
    assert!(!env.repo().join("docs").join(&names[1]).exists());
    assert!(!par2_leftover.exists());
    assert!(
        before[3].join("SHA256SUMS").exists(),
        "only par2 leftovers of manifest files"
    );
    assert!(!env.repo().join("docs/.staging.docs_FULL_x").exists());

    // Named, but needed: the newest FULL stays while its INCR does.
    let out = env.run(&["--json", "cleanup", "--yes", "--set", &names[2]]);
    assert_eq!(code(&out), 0);
    let after: Vec<String> = env.sets("docs").iter().map(|p| name_of(p)).collect();
    assert_eq!(
        after,
        [names[2].clone(), names[3].clone()],
        "old FULL gone with --yes"
    );

    // The remaining chain still restores.
    let target = env.path("restored");
    let out = env.run(&[
        "restore",
        "-d",
        "docs",
        "--target",
        &target.display().to_string(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn the_repository_keeps_what_a_destination_has_not_received_and_destinations_keep_their_own_policy()
{
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let usb = env.path("usb");
    let keep = "[definition.keep]\nfull = \"0d\"\ndiff = \"0d\"\nincr = \"0d\"\n";
    let dest = format!(
        "\n[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\nkeep = {{ full = \"forever\", diff = \"0d\", incr = \"0d\" }}\n",
        usb.display().to_string()
    );
    definition(&env, &format!("{keep}{dest}"));
    for level in ["--full", "--diff", "--diff"] {
        assert_eq!(code(&env.run(&["backup", level])), 0);
    }
    let names: Vec<String> = env.sets("docs").iter().map(|p| name_of(p)).collect();
    // Not replicated yet: the repository keeps the first DIFF.
    let out = env.run(&["cleanup", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("not yet replicated to usb"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.sets("docs").len(), 3);

    assert_eq!(code(&env.run(&["replicate"])), 0);
    let out = env.run(&["cleanup", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let on_repo: Vec<String> = env.sets("docs").iter().map(|p| name_of(p)).collect();
    assert_eq!(
        on_repo,
        [names[0].clone(), names[2].clone()],
        "FULL kept: the newest DIFF needs it"
    );
    let on_usb: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(usb.join("docs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut expected = [names[0].clone(), names[2].clone()];
    expected.sort();
    assert_eq!(on_usb, expected, "the first DIFF is gone from the disk too");

    // Only the destination: a policy is required there.
    let out = env.run(&["cleanup", "--dest", "nowhere"]);
    assert_eq!(code(&out), 2);
}

/// What a cleanup killed right after it removed a set's manifest leaves (its marker, the
/// folder without MANIFEST.toml): audit calls it a removal in progress and never heals it
/// back from another copy; the next cleanup finishes it.
#[test]
fn an_interrupted_removal_is_finished_and_never_resurrected() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let usb = env.path("usb");
    definition(
        &env,
        &format!(
            "[definition.keep]\nfull = \"0d\"\ndiff = \"0d\"\nincr = \"0d\"\n\n\
             [[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n",
            usb.display().to_string()
        ),
    );
    for level in ["--full", "--incr", "--full"] {
        assert_eq!(code(&env.run(&["backup", level])), 0);
    }
    assert_eq!(code(&env.run(&["replicate"])), 0);
    let old = env.sets("docs").remove(0);
    fs::write(
        old.join(".darvault-removing"),
        b"removed by darvault cleanup\n",
    )
    .unwrap();
    fs::remove_file(old.join("MANIFEST.toml")).unwrap();

    let out = env.run(&["--json", "audit", "repository", "--repair"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("removal in progress"),
        "{}",
        stdout(&out)
    );
    assert!(!old.join("MANIFEST.toml").exists(), "healed back from usb");
    let out = env.run(&["--json", "list"]);
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = listing["definitions"][0]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or(""))
        .collect();
    assert!(!listed.contains(&name_of(&old).as_str()), "{listing}");

    let out = env.run(&["cleanup", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(!old.exists(), "the next cleanup finished the removal");
}

/// Everything under `dir` (itself not included).
fn inside(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .flatten()
        .map(|e| e.path().to_owned())
        .collect()
}

/// A cleanup killed at any step of a set's removal (the first file, the last file before the
/// intent record, the record itself, the folder) leaves the record as long as anything it
/// governs is there; the next cleanup finishes the removal and audit never calls it damage.
#[test]
fn a_cleanup_killed_at_any_step_of_a_removal_is_finished_by_the_next() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    definition(
        &env,
        "[definition.keep]\nfull = \"0d\"\ndiff = \"0d\"\nincr = \"0d\"\n",
    );
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    for step in 0..4 {
        assert_eq!(code(&env.run(&["backup", "--full"])), 0);
        let old = env.sets("docs").remove(0);
        let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(&old)
            .min_depth(1)
            .into_iter()
            .flatten()
            .collect();
        let files = entries.iter().filter(|e| e.file_type().is_file()).count();
        let folders = entries.len() - files;
        // MANIFEST.toml and SHA256SUMS go first (unlinkat), the record is written: the walk
        // then unlinks the other files, then the record; then rmdir of each folder, its own last.
        let (syscall, when) = match step {
            0 => ("unlink", 1),
            1 => ("unlink", files - 2),
            2 => ("unlink", files - 1),
            _ => ("rmdir", folders + 1),
        };
        assert!(
            env.killed_at(syscall, when, &["cleanup", "--yes"]),
            "step {step}: the kill point ({syscall} #{when}) was not reached"
        );
        assert!(old.exists(), "step {step}: killed before the folder went");
        let left = inside(&old);
        assert!(
            left.is_empty() || old.join(".darvault-removing").exists(),
            "step {step}: files left without the intent record: {left:?}"
        );
        let out = env.run(&["--json", "audit", "repository"]);
        assert_eq!(code(&out), 0, "step {step}: {}", stdout(&out));
        let out = env.run(&["cleanup", "--yes"]);
        assert_eq!(code(&out), 0, "step {step}: {}", stdout(&out));
        assert!(!old.exists(), "step {step}: the next cleanup finished it");
        assert_eq!(code(&env.run(&["audit", "repository"])), 0);
    }
}

/// The same on an SFTP copy, where the server removes the files: killed (a kill point in
/// darvault, as no system call of its own marks the moment) at the first file removed after
/// the manifest, at the last before the record and at the record, the record stands while
/// anything it governs does, and the next cleanup finishes the removal.
#[test]
fn a_cleanup_of_an_sftp_copy_killed_mid_removal_is_finished_by_the_next() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let keep = "keep = { full = \"0d\", diff = \"0d\", incr = \"0d\" }\n";
    let (sftp, root) = destination("sftp", "cleanup-kill", keep);
    let root = root.unwrap();
    definition(&env, &format!("\n{sftp}"));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    for step in 0..3 {
        assert_eq!(code(&env.run(&["backup", "--full"])), 0);
        assert_eq!(code(&env.run(&["replicate"])), 0);
        let mut on_sftp: Vec<std::path::PathBuf> = fs::read_dir(root.join("docs"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("MANIFEST.toml").exists())
            .collect();
        on_sftp.sort();
        let old = on_sftp.remove(0);
        let files = walkdir::WalkDir::new(&old)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count();
        // Removed one by one: MANIFEST.toml, SHA256SUMS, the other files, the record.
        let when = [3, files, files + 1][step];
        env.killed_at_point(
            &format!("remove:{when}"),
            &["cleanup", "--yes", "--dest", "sftp"],
        );
        let left = inside(&old);
        assert!(
            old.join(".darvault-removing").exists(),
            "step {step}: the record outlives what it governs: {left:?}"
        );
        let out = env.run(&["audit", "sftp"]);
        assert_eq!(code(&out), 0, "step {step}: {}", stdout(&out));
        let out = env.run(&["cleanup", "--yes", "--dest", "sftp"]);
        assert_eq!(code(&out), 0, "step {step}: {}", stdout(&out));
        assert!(!old.exists(), "step {step}: the next cleanup finished it");
    }
}

#[test]
fn notices_and_hooks_report_every_outcome_and_never_leak_the_urls() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let (url, seen) = recording_server();
    let discord_file = env.path("discord-url");
    fs::write(
        &discord_file,
        format!("{url}/api/webhooks/42/s3cr3t-token\n"),
    )
    .unwrap();
    let outcome_file = env.path("outcome");
    let hooks = format!(
        "[definition.hooks]\nbefore = [\"test ! -e {0}/stop\"]\nafter = [\"echo $DARVAULT_LEVEL $DARVAULT_OUTCOME >> {1}\"]\n\n[notify]\ndiscord_url_file = {2:?}\nwebhook_url_env = \"DV_PING\"\n",
        env.path("").display(),
        outcome_file.display(),
        discord_file.display().to_string()
    );
    definition(&env, &hooks);
    let ping = format!("{url}/ping/another-secret");
    let run = |args: &[&str]| {
        let out = env.cmd().env("DV_PING", &ping).args(args).output().unwrap();
        eprintln!("{}{}", stdout(&out), stderr(&out));
        out
    };

    let out = run(&["backup", "--full"]);
    assert_eq!(code(&out), 0);
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let discord = requests
        .iter()
        .find(|(p, _)| p.contains("webhooks"))
        .unwrap();
    let content = discord.1["content"].as_str().unwrap();
    assert!(
        content.contains("backup --full: 1 of 1 definition(s) published"),
        "{content}"
    );
    let ping_body = &requests.iter().find(|(p, _)| p.contains("ping")).unwrap().1;
    assert_eq!(ping_body["event"], "success");
    assert_eq!(ping_body["runs"][0]["subject"], "docs");
    assert_eq!(ping_body["runs"][0]["command"], "backup");

    // A failing `before` hook stops the backup: a failure notice, and the after hook knows.
    fs::write(env.path("stop"), b"").unwrap();
    let out = run(&["backup", "--diff"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("hook") || stdout(&out).contains("hook"));
    let requests = seen.lock().unwrap().clone();
    let last_ping = &requests
        .iter()
        .rev()
        .find(|(p, _)| p.contains("ping"))
        .unwrap()
        .1;
    assert_eq!(last_ping["event"], "failure");
    assert!(last_ping["message"].as_str().unwrap().contains("hook"));
    assert_eq!(
        fs::read_to_string(&outcome_file).unwrap(),
        "FULL published\nDIFF failed\n"
    );

    // Audit damage is its own event.
    fs::remove_file(env.path("stop")).unwrap();
    let set = env.sets("docs").pop().unwrap();
    let slice = set.join(format!("{}.1.dar", name_of(&set)));
    let mut bytes = fs::read(&slice).unwrap();
    bytes[100] ^= 1;
    fs::write(&slice, bytes).unwrap();
    assert_eq!(code(&run(&["audit"])), 4);
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.last().unwrap().1["event"], "damage");

    // With the server gone, the run still succeeds; a warning says the notice failed.
    fs::write(
        &discord_file,
        "http://127.0.0.1:9/api/webhooks/42/s3cr3t-token\n",
    )
    .unwrap();
    let out = env
        .cmd()
        .env("DV_PING", "http://127.0.0.1:9/ping/another-secret")
        .args(["audit", "--repair"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not be sent"),
        "{}",
        stderr(&out)
    );

    // The URLs are secrets: not in any output, nor in the log files.
    let mut everything = stderr(&out) + &stdout(&out);
    for entry in walkdir(&env.path("home/.local/state/darvault/logs")) {
        everything += &fs::read_to_string(entry).unwrap_or_default();
    }
    assert!(!everything.contains("s3cr3t-token") && !everything.contains("another-secret"));
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn status_shows_runs_copies_and_proofs_as_json_prometheus_and_a_page_chromium_renders() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let usb = env.path("usb");
    definition(
        &env,
        &format!(
            "\n[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n",
            usb.display().to_string()
        ),
    );
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    write(&env.path("src/plain.txt"), b"changed\n");
    assert_eq!(code(&env.run(&["backup", "--diff"])), 0);
    assert_eq!(code(&env.run(&["replicate"])), 0);
    assert_eq!(
        code(&env.run(&["audit", &env.repo().display().to_string()])),
        0
    );

    let page = env.path("status.html");
    let metrics = env.path("darvault.prom");
    let out = env.run(&[
        "--json",
        "status",
        "--html",
        &page.display().to_string(),
        "--prometheus",
        &metrics.display().to_string(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let docs = &status["definitions"][0];
    assert_eq!(docs["last"]["FULL"]["outcome"], "ok");
    assert_eq!(docs["last"]["DIFF"]["outcome"], "ok");
    assert!(docs["history"][0]["details"]["phases"].is_array());
    let copies = status["copies"].as_array().unwrap();
    let repo = &copies[0];
    assert_eq!(repo["kind"], "repository");
    assert_eq!(repo["sets"], 2);
    assert_eq!(repo["never_proven"].as_array().unwrap().len(), 0);
    assert!(repo["free_bytes"].as_u64().unwrap() > 0);
    let usb_status = copies.iter().find(|c| c["name"] == "usb").unwrap();
    assert_eq!(usb_status["missing"].as_array().unwrap().len(), 0);
    assert_eq!(usb_status["never_proven"].as_array().unwrap().len(), 2);

    // The textfile: well-formed lines, the numbers above.
    let text = fs::read_to_string(&metrics).unwrap();
    let line =
        regex::Regex::new(r#"^darvault_[a-z_]+\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\} [0-9.e+-]+$"#)
            .unwrap();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.is_match(l), "{l}");
    }
    assert!(
        text.contains("darvault_copy_sets{copy=\"usb\",kind=\"fs\"} 2"),
        "{text}"
    );
    assert!(text.contains("darvault_copy_unproven_sets{copy=\"usb\",kind=\"fs\"} 2"));
    assert!(
        text.contains("darvault_backup_last_run_success{definition=\"docs\",level=\"DIFF\"} 1")
    );

    // The page renders in headless Chromium: a screenshot with the plots on it.
    let shot = env.path("status.png");
    let chromium = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg("--window-size=1200,1600")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .env("HOME", env.path("chromium-home"))
        .output()
        .expect("chromium (scripts/setup --test installs it)");
    assert!(chromium.status.success(), "{}", stderr(&chromium));
    let png = fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert!(
        png.len() > 20_000,
        "a page with tables and plots, not a blank one ({} bytes)",
        png.len()
    );
    let html = fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<svg").count(), 3);
    assert!(!html.contains("<script"), "self-contained and static");
    // Rows in the order of a chain; each phase bar labelled with the run's wall time (the
    // phases overlap: their sum is more).
    let (full, diff) = (
        html.find("<tr><td>FULL").unwrap(),
        html.find("<tr><td>DIFF").unwrap(),
    );
    assert!(full < diff, "FULL before DIFF");
    let history = docs["history"].as_array().unwrap();
    for run in history.iter().filter(|r| r["details"]["phases"].is_array()) {
        let wall = format!(">{:.1} s</text>", run["seconds"].as_f64().unwrap());
        assert!(html.contains(&wall), "{wall} in the phase plot");
    }
}

#[test]
fn generated_systemd_units_verify_and_follow_the_schedule() {
    let env = Env::new();
    fs::create_dir_all(env.path("src")).unwrap();
    definition(&env, "\n[schedule]\nincr = \"*-*-* 12:30\"\n");
    let out = env.run(&["systemd", "--install"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dir = env.path("home/.config/systemd/user");
    let mut units: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    units.sort();
    assert_eq!(units.len(), 11, "{units:?}");
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .expect("systemd-analyze (scripts/setup --test installs systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        stderr(&verify)
    );
    for timer in units.iter().filter(|u| u.ends_with(".timer")) {
        let text = fs::read_to_string(dir.join(timer)).unwrap();
        assert!(text.contains("Persistent=true"), "{timer}");
        let when = text
            .lines()
            .find_map(|l| l.strip_prefix("OnCalendar="))
            .unwrap();
        let calendar = std::process::Command::new("systemd-analyze")
            .args(["calendar", when])
            .output()
            .unwrap();
        assert!(calendar.status.success(), "{timer}: {when}");
    }
    let incr = fs::read_to_string(dir.join("darvault-backup-incr.timer")).unwrap();
    assert!(incr.contains("OnCalendar=*-*-* 12:30"));
    let service = fs::read_to_string(dir.join("darvault-backup-incr.service")).unwrap();
    assert!(service.contains("OnSuccess=darvault-replicate.service"));
    assert!(service.contains(&format!("--config {}", env.path("config.toml").display())));
    assert!(service.contains("backup --incr"));
}

/// An audit of the repository by its path is credited to "repository" in status; a missing
/// repository folder (an unplugged disk) is reported by status, not a failure of it.
#[test]
fn status_credits_audits_by_path_and_reports_a_missing_repository() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    definition(&env, "");
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let repo = env.repo().display().to_string();
    assert_eq!(code(&env.run(&["audit", &repo])), 0);
    let out = env.run(&["--json", "status"]);
    assert_eq!(code(&out), 0);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let repository = &status["copies"][0];
    assert_eq!(repository["name"], "repository", "{status}");
    assert_eq!(
        repository["never_proven"].as_array().unwrap().len(),
        0,
        "{status}"
    );

    fs::rename(env.repo(), env.path("unplugged")).unwrap();
    let out = env.run(&["--json", "status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["copies"][0]["error"].is_string(), "{status}");
}

/// A replicate killed at any step of a set's copy (after its first file, its last data file,
/// SHA256SUMS, the manifest) leaves a set folder that is never taken for damage: without its
/// manifest it holds the record of being written, and audit says so (exit 0); the next
/// replicate finishes the set, and a repairing audit removes a record the manifest outlived.
fn a_replicate_killed_at_any_step_of_a_set_is_finished_by_the_next(kind: &str) {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    definition(&env, "");
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let set = env.sets("docs").remove(0);
    let set_name = name_of(&set);
    let data_files = walkdir::WalkDir::new(&set)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count()
        - 2;
    // Put into place one by one: the data files, SHA256SUMS, MANIFEST.toml.
    for (step, when) in [1, data_files, data_files + 1, data_files + 2]
        .into_iter()
        .enumerate()
    {
        let name = format!("{kind}{step}");
        let (dest, root) = match kind {
            "fs" => {
                let root = env.path(&name);
                let dest = format!(
                    "[[destination]]\nname = {name:?}\nkind = \"fs\"\nroot = {:?}\n",
                    root.display().to_string()
                );
                (dest, root)
            }
            _ => {
                let (dest, root) = destination(kind, &format!("replicate-kill-{step}"), "");
                let dest = dest.replace(&format!("name = \"{kind}\""), &format!("name = {name:?}"));
                (dest, root.unwrap())
            }
        };
        definition(&env, &format!("\n{dest}"));
        env.killed_at_point(&format!("put:{when}"), &["replicate", "--to", &name]);
        let on_copy = root.join("docs").join(&set_name);
        assert!(
            on_copy.join("MANIFEST.toml").exists() || on_copy.join(".darvault-writing").exists(),
            "step {step}: a set folder without its manifest holds the record: {:?}",
            inside(&on_copy)
        );
        let out = env.run(&["audit", &name]);
        assert_eq!(
            code(&out),
            0,
            "step {step}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let out = env.run(&["replicate", "--to", &name]);
        assert_eq!(
            code(&out),
            0,
            "step {step}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let out = env.run(&["--json", "audit", &name, "--repair"]);
        assert_eq!(code(&out), 0, "step {step}: {}", stdout(&out));
        assert!(
            !on_copy.join(".darvault-writing").exists(),
            "step {step}: no record outlives the copy"
        );
        let out = env.run(&["--json", "audit", &name]);
        assert_eq!(code(&out), 0, "step {step}: {}", stdout(&out));
        let sets = &json(&out)["copies"][0]["sets"];
        assert_eq!(sets.as_array().map(Vec::len), Some(1), "{}", stdout(&out));
        assert_eq!(sets[0]["status"], "ok", "step {step}: {}", stdout(&out));
    }
}

#[test]
fn a_replicate_to_a_disk_killed_at_any_step_is_finished_by_the_next() {
    a_replicate_killed_at_any_step_of_a_set_is_finished_by_the_next("fs");
}

#[test]
fn a_replicate_to_sftp_killed_at_any_step_is_finished_by_the_next() {
    a_replicate_killed_at_any_step_of_a_set_is_finished_by_the_next("sftp");
}

/// The rule of `docs` in `status --check --json`: (exit code, the rule's JSON).
fn rule_of(env: &Env, ping: &str) -> (i32, serde_json::Value) {
    let out = env
        .cmd()
        .env("DV_PING", ping)
        .args(["--json", "status", "--check"])
        .output()
        .unwrap();
    let text = env.cmd().args(["status"]).output().unwrap();
    eprintln!("{}", stdout(&text));
    (code(&out), json(&out)["rules"][0].clone())
}

fn parts(rule: &serde_json::Value) -> Vec<(String, u64, u64)> {
    [
        "copies",
        "media",
        "offsite",
        "offline_or_immutable",
        "errors",
    ]
    .iter()
    .map(|p| {
        let part = &rule[*p];
        (
            (*p).to_owned(),
            part["have"].as_u64().unwrap(),
            part["need"].as_u64().unwrap(),
        )
    })
    .collect()
}

fn part(rule: &serde_json::Value, name: &str) -> (u64, u64) {
    let found = parts(rule).into_iter().find(|(p, _, _)| p == name).unwrap();
    (found.1, found.2)
}

/// "Is my data safe?": the 3-2-1-1-0 rule in status. The repository alone fails on copies,
/// media, offsite and offline; with a USB disk kept offline and an immutable S3 bucket, all
/// proven, it holds (`status --check` exits 0, else 8); the USB copy's proof grown older than
/// proof_max_age, it fails on copies and offline and names the audit to run; a damaged set
/// found on a copy fails it on errors until repaired. A change of verdict is notified once.
#[test]
fn the_backup_rule_says_whether_the_data_is_safe_and_what_to_do() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let (url, seen) = recording_server();
    let ping = format!("{url}/ping");
    let notify = "[notify]\nwebhook_url_env = \"DV_PING\"\n\n";
    env.config(&format!(
        "{notify}[[definition]]\nname = \"docs\"\nsource = {:?}\n",
        env.path("src").display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let (exit, rule) = rule_of(&env, &ping);
    assert_eq!(exit, 8, "{rule}");
    assert_eq!(rule["holds"], false);
    assert_eq!(
        parts(&rule),
        [
            ("copies".into(), 1, 3),
            ("media".into(), 1, 2),
            ("offsite".into(), 0, 1),
            ("offline_or_immutable".into(), 0, 1),
            ("errors".into(), 0, 0)
        ]
    );
    assert!(rule["advice"].to_string().contains("add-copies"), "{rule}");

    // A USB disk unplugged between runs, and a bucket under object lock.
    let usb = env.path("usb");
    let (s3, _) = destination("s3", "rule", "immutable = true\n");
    definition(
        &env,
        &format!(
            "\n[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\noffline = true\nmedia = \"usb-disk\"\n\n{s3}\n{notify}",
            usb.display().to_string()
        ),
    );
    assert_eq!(code(&env.run(&["replicate"])), 0);
    let (exit, rule) = rule_of(&env, &ping);
    assert_eq!(exit, 8, "replicated, not yet proven there: {rule}");
    assert!(rule["advice"].to_string().contains("\"audit\""), "{rule}");
    for copy in ["usb", "s3"] {
        assert_eq!(code(&env.run(&["audit", copy])), 0);
    }
    let (exit, rule) = rule_of(&env, &ping);
    assert_eq!(exit, 0, "{rule}");
    assert_eq!(rule["holds"], true);
    assert_eq!(part(&rule, "copies"), (3, 3));
    assert_eq!(part(&rule, "media"), (3, 2));

    // The USB copy's last proof, 61 days ago.
    let db = rusqlite::Connection::open(env.path("home/.local/state/darvault/state.db")).unwrap();
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(61 * 24);
    db.execute(
        "UPDATE audited_set SET proven_at = ?1 WHERE copy = 'usb'",
        [long_ago.to_string()],
    )
    .unwrap();
    let (exit, rule) = rule_of(&env, &ping);
    assert_eq!(exit, 8, "{rule}");
    assert_eq!(part(&rule, "copies"), (2, 3));
    assert_eq!(
        part(&rule, "offline_or_immutable"),
        (1, 1),
        "the bucket: {rule}"
    );
    let audit_usb = serde_json::json!({"do": "audit", "copy": "usb", "proven_days_ago": 61});
    assert!(
        rule["advice"].as_array().unwrap().contains(&audit_usb),
        "{rule}"
    );
    let text = stdout(&env.run(&["status"]));
    assert!(
        text.contains("docs  3-2-1-1-0 ✗  copies 2/3")
            && text.contains("audit usb: last proven 61 days ago"),
        "{text}"
    );
    assert_eq!(code(&env.run(&["audit", "usb"])), 0);
    assert_eq!(rule_of(&env, &ping).0, 0);

    // A damaged set on the USB copy.
    let set = env.sets("docs").pop().unwrap();
    let slice = usb
        .join("docs")
        .join(name_of(&set))
        .join(format!("{}.1.dar", name_of(&set)));
    let mut bytes = fs::read(&slice).unwrap();
    bytes[100] ^= 0x5a;
    fs::write(&slice, bytes).unwrap();
    assert_eq!(code(&env.run(&["audit", "usb"])), 4);
    let (exit, rule) = rule_of(&env, &ping);
    assert_eq!(exit, 8, "{rule}");
    assert_eq!(part(&rule, "errors"), (1, 0));
    assert!(rule["advice"].to_string().contains("repair"), "{rule}");
    assert_eq!(code(&env.run(&["audit", "usb", "--repair"])), 0);
    assert_eq!(rule_of(&env, &ping).0, 0);
    let (page, metrics) = (env.path("status.html"), env.path("status.prom"));
    let out = env
        .cmd()
        .env("DV_PING", &ping)
        .args(["status", "--html"])
        .arg(&page)
        .arg("--prometheus")
        .arg(&metrics)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let page = fs::read_to_string(page).unwrap();
    assert!(
        page.contains("Is the data safe?") && page.contains("3-2-1-1-0 ✓"),
        "{page}"
    );
    let metrics = fs::read_to_string(metrics).unwrap();
    for line in [
        "darvault_rule_holds{definition=\"docs\"} 1",
        "darvault_rule_part{definition=\"docs\",part=\"copies\",of=\"have\"} 3",
        "darvault_rule_part{definition=\"docs\",part=\"copies\",of=\"need\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }

    // Notified at each change of verdict, not at every status.
    let told: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path == "/ping")
        .map(|(_, body)| body["message"].as_str().unwrap_or("").to_owned())
        .filter(|m| m.contains("rule"))
        .collect();
    assert_eq!(
        told,
        [
            "docs: the 3-2-1-1-0 rule holds again",
            "docs: the 3-2-1-1-0 rule fails",
            "docs: the 3-2-1-1-0 rule holds again",
            "docs: the 3-2-1-1-0 rule fails",
            "docs: the 3-2-1-1-0 rule holds again",
        ],
        "{told:?}"
    );
}
