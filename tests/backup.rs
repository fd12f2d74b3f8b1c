//! The backup cycle with the real binary and real dar.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

fn definition(env: &Env, name: &str, extra: &str) -> String {
    format!(
        "[[definition]]\nname = {name:?}\nsource = {:?}\nslice_size = \"128K\"\n{extra}\n[definition.restore_test]\ncount = 50\n",
        env.path(&format!("src-{name}")).display().to_string()
    )
}

#[test]
fn full_diff_incr_chain_restores_every_state_exactly() {
    let env = Env::new();
    let src = env.path("src-docs");
    awkward_tree(&src);
    env.config(&definition(&env, "docs", ""));

    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 0);
    let state_full = snapshot(&src);

    // A week of changes: edit, delete, add, chmod; the hard-linked pair stays untouched.
    write(&src.join("plain.txt"), b"plain, edited\n");
    fs::remove_file(src.join("meta/new\nline.txt")).unwrap();
    fs::remove_dir_all(src.join("empty/nested empty")).unwrap();
    write(&src.join("added/after full.txt"), b"new\n");
    fs::set_permissions(src.join("modes/private"), fs::Permissions::from_mode(0o640)).unwrap();
    let out = env.run(&["backup", "--diff"]);
    assert_eq!(
        code(&out),
        0,
        "DIFF with hard links in the source must pass its restore test"
    );
    let state_diff = snapshot(&src);

    write(&src.join("added/after diff.txt"), b"newer\n");
    fs::remove_file(src.join("added/after full.txt")).unwrap();
    fs::rename(src.join("dir with spaces"), src.join("renamed dir")).unwrap();
    let out = env.run(&["backup", "--incr"]);
    assert_eq!(code(&out), 0);
    let state_incr = snapshot(&src);

    let sets = env.sets("docs");
    let levels: Vec<String> = sets
        .iter()
        .map(|s| name_of(s).split('_').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(levels, ["FULL", "DIFF", "INCR"]);
    for set in &sets {
        sha256sum_check(set);
    }
    for (upto, expected) in [(1, &state_full), (2, &state_diff), (3, &state_incr)] {
        let target = env.path(&format!("restore-{upto}"));
        extract_chain(&sets[..upto], &target);
        assert_same_tree(expected, &snapshot(&target));
    }

    // The chain is written down in each manifest, and the DIFF records the FULL as its base.
    let diff_manifest = fs::read_to_string(sets[1].join("MANIFEST.toml")).unwrap();
    assert!(
        diff_manifest.contains(&format!("chain = [\"{}\"]", name_of(&sets[0]))),
        "{diff_manifest}"
    );
    let incr_manifest = fs::read_to_string(sets[2].join("MANIFEST.toml")).unwrap();
    assert!(incr_manifest.contains(&format!("name = \"{}\"", name_of(&sets[1]))));

    // list shows the chain, also as JSON.
    let out = env.run(&["list"]);
    assert!(stdout(&out).contains(&name_of(&sets[2])));
    let out = env.run(&["--json", "list", "-d", "docs"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["definitions"][0]["sets"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["definitions"][0]["sets"][2]["base"],
        serde_json::json!(name_of(&sets[1]))
    );
}

#[test]
fn a_diff_can_be_made_after_the_base_slices_moved_away() {
    let env = Env::new();
    awkward_tree(&env.path("src-docs"));
    env.config(&definition(&env, "docs", ""));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let full = env.sets("docs")[0].clone();
    for e in fs::read_dir(&full).unwrap().flatten() {
        let n = name_of(&e.path());
        if n.ends_with(".dar") && !n.contains(".catalog.") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    write(&env.path("src-docs/plain.txt"), b"changed\n");
    assert_eq!(
        code(&env.run(&["backup", "--diff"])),
        0,
        "the isolated catalogue is the reference"
    );
}

#[test]
fn incr_since_the_last_diff_when_asked() {
    let env = Env::new();
    awkward_tree(&env.path("src-docs"));
    env.config(&definition(&env, "docs", "incr_base = \"diff\""));
    for level in ["--full", "--diff", "--incr", "--incr"] {
        write(&env.path("src-docs/plain.txt"), level.as_bytes());
        assert_eq!(code(&env.run(&["backup", level])), 0);
    }
    let sets = env.sets("docs");
    let second_incr = fs::read_to_string(sets[3].join("MANIFEST.toml")).unwrap();
    assert!(
        second_incr.contains(&format!("[set.base]\nname = \"{}\"", name_of(&sets[1]))),
        "{second_incr}"
    );
}

#[test]
fn diff_or_incr_without_a_base_is_refused_and_writes_nothing() {
    let env = Env::new();
    awkward_tree(&env.path("src-docs"));
    env.config(&definition(&env, "docs", ""));
    for level in ["--diff", "--incr"] {
        let out = env.run(&["backup", level]);
        assert_eq!(code(&out), 1);
        assert!(
            stdout(&out).contains("run `darvault backup --full -d docs` first"),
            "{}",
            stdout(&out)
        );
        assert!(env.sets("docs").is_empty());
        let leftovers: Vec<_> = fs::read_dir(env.repo().join("docs"))
            .map(|r| r.flatten().count())
            .into_iter()
            .collect();
        assert!(leftovers.iter().all(|n| *n == 0), "nothing may be written");
    }
}

#[test]
fn a_failing_definition_does_not_stop_the_others() {
    let env = Env::new();
    awkward_tree(&env.path("src-good"));
    env.config(&format!(
        "{}{}",
        definition(&env, "missing", ""),
        definition(&env, "good", "")
    ));
    let out = env.run(&["--json", "backup", "--full"]);
    assert_eq!(code(&out), 3, "partial success");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["definitions"][0]["outcome"], "failed");
    assert!(
        v["definitions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("missing or not a directory")
    );
    assert_eq!(v["definitions"][1]["outcome"], "published");
    assert_eq!(env.sets("good").len(), 1);

    // Only the named definition runs with -d.
    let out = env.run(&["backup", "--full", "-d", "good"]);
    assert_eq!(code(&out), 0);
    let out = env.run(&["backup", "--full", "-d", "nosuch"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no definition named \"nosuch\""));
}

#[test]
fn a_second_concurrent_run_is_refused() {
    let env = Env::new();
    awkward_tree(&env.path("src-docs"));
    env.config(&definition(&env, "docs", ""));
    fs::create_dir_all(env.repo()).unwrap();
    let holder = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.repo().join(".darvault.lock"))
        .unwrap();
    holder.lock().unwrap();
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 7);
    assert!(
        stderr(&out).contains("another darvault run is using"),
        "{}",
        stderr(&out)
    );
    drop(holder);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
}

#[test]
fn an_invalid_config_names_file_line_and_key() {
    let env = Env::new();
    env.config("[[definition]]\nname = \"docs\"\nsource = \"/tmp\"\nslice_size = \"12 parsecs\"\n");
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("config.toml") && err.contains("line 6") && err.contains("slice_size"),
        "{err}"
    );

    env.config("[[definition]]\nname = \"docs\"\nsource = \"/tmp\"\nretention = 3\n");
    let err = stderr(&env.run(&["backup", "--full"]));
    assert!(err.contains("line 6") && err.contains("retention"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_darvault"))
        .env("DARVAULT_CONFIG", "/nonexistent/darvault.toml")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("darvault init"));
}

#[test]
fn init_writes_a_commented_config_and_never_overwrites() {
    let env = Env::new();
    let out = env.run(&["init", "--repository", "/srv/my backups"]);
    assert_eq!(code(&out), 0);
    let text = fs::read_to_string(env.path("config.toml")).unwrap();
    assert!(text.contains("repository = \"/srv/my backups\"") && text.contains("# "));
    let out = env.run(&["init"]);
    assert_eq!(code(&out), 2);
    assert_eq!(fs::read_to_string(env.path("config.toml")).unwrap(), text);
}

/// A dar stand-in that runs the real dar, then does something to the source or its exit.
fn dar_wrapper(env: &Env, after_create: &str) -> String {
    let script = env.path("dar-wrapper.sh");
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v dar"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    fs::write(
        &script,
        format!(
            "#!/bin/sh\ncreate=no\nfor a in \"$@\"; do [ \"$a\" = -c ] && create=yes; done\n{real_dar} \"$@\"\nrc=$?\nif [ $create = yes ]; then\n{after_create}\nfi\nexit $rc\n",
            real_dar = real.trim()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    format!("[tools]\ndar = {:?}\n\n", script.display().to_string())
}

#[test]
fn the_restore_test_reports_a_source_changed_after_the_backup() {
    let env = Env::new();
    let src = env.path("src-docs");
    write(&src.join("only.txt"), b"the one file that can be sampled\n");
    let tools = dar_wrapper(
        &env,
        &format!(
            "echo tampered > '{p}'; chmod 600 '{p}'",
            p = src.join("only.txt").display()
        ),
    );
    let text = format!(
        "repository = {:?}\n{tools}{}",
        env.repo().display().to_string(),
        definition(&env, "docs", "")
    );
    fs::write(env.path("config.toml"), text).unwrap();
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 6, "published with a warning");
    assert!(
        stdout(&out).contains("only.txt changed in the source after the backup started"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn dar_reporting_unsaved_files_keeps_the_set_with_a_warning() {
    let env = Env::new();
    awkward_tree(&env.path("src-docs"));
    let tools = dar_wrapper(
        &env,
        "echo 'Error while saving /x/locked.db: Permission denied' >&2; exit 5",
    );
    let text = format!(
        "repository = {:?}\n{tools}{}",
        env.repo().display().to_string(),
        definition(&env, "docs", "")
    );
    fs::write(env.path("config.toml"), text).unwrap();
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 6);
    assert!(
        stdout(&out).contains("locked.db: Permission denied"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.sets("docs").len(), 1);

    let tools = dar_wrapper(&env, "exit 4");
    let text = format!(
        "repository = {:?}\n{tools}{}",
        env.repo().display().to_string(),
        definition(&env, "docs", "")
    );
    fs::write(env.path("config.toml"), text).unwrap();
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 1, "dar exit 4 publishes nothing");
    assert_eq!(env.sets("docs").len(), 1);
}

#[test]
fn kill_9_during_dar_leaves_no_published_set_and_the_next_run_converges() {
    let env = Env::new();
    awkward_tree(&env.path("src-docs"));
    let marker = env.path("dar-running");
    // The stand-in writes a first slice, then hangs as if compressing a large file.
    let tools = dar_wrapper(
        &env,
        &format!("touch '{}'; exec sleep 600", marker.display()),
    );
    let text = format!(
        "repository = {:?}\n{tools}{}",
        env.repo().display().to_string(),
        definition(&env, "docs", "")
    );
    fs::write(env.path("config.toml"), text).unwrap();
    let mut child = env.cmd().args(["backup", "--full"]).spawn().unwrap();
    while !marker.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        env.sets("docs").is_empty(),
        "a killed run must not leave a published set"
    );
    let leftovers: Vec<String> = fs::read_dir(env.repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| name_of(&e.path()))
        .collect();
    assert!(
        leftovers.iter().all(|n| n.starts_with(".staging.")),
        "{leftovers:?}"
    );
    let out = env.run(&["list"]);
    assert!(
        stdout(&out).contains("unfinished set"),
        "list reports the leftover, not a set"
    );

    env.config(&definition(&env, "docs", ""));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let names: Vec<String> = fs::read_dir(env.repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| name_of(&e.path()))
        .collect();
    assert_eq!(names.len(), 1, "stale staging was cleaned: {names:?}");
    sha256sum_check(&env.sets("docs")[0]);
}

#[test]
fn excludes_prunes_includes_and_cache_tags() {
    let env = Env::new();
    let src = env.path("src-docs");
    write(&src.join("keep/a.txt"), b"a");
    write(&src.join("keep/b.tmp"), b"b");
    write(&src.join("keep/deep/cache/c"), b"c");
    write(&src.join("keep/skip-me/d"), b"d");
    write(
        &src.join("keep/browser/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    );
    write(&src.join("keep/browser/e"), b"e");
    write(&src.join("other/f"), b"f");
    env.config(&definition(
        &env,
        "docs",
        "include = [\"keep\"]\nexclude = [\"*.tmp\", \"cache\"]\nprune = [\"keep/skip-me\"]",
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let target = env.path("restored");
    extract_chain(&env.sets("docs"), &target);
    let got: Vec<String> = snapshot(&target)
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, ["keep/a.txt"]);
}

#[test]
fn encrypted_sets_keep_the_passphrase_off_command_lines_manifests_and_logs() {
    let env = Env::new();
    let src = env.path("src-vault");
    awkward_tree(&src);
    let secret = "correct horse $battery #staple";
    let argv_log = env.path("dar-argv.log");
    let tools = dar_wrapper(&env, "true");
    // Record every argument list dar is started with.
    let script = env.path("dar-wrapper.sh");
    let text = fs::read_to_string(&script).unwrap().replacen(
        "create=no\n",
        &format!(
            "create=no\nprintf '%s\\n' \"$*\" >> '{}'\n",
            argv_log.display()
        ),
        1,
    );
    fs::write(&script, text).unwrap();
    let config = format!(
        "repository = {:?}\n{tools}{}[definition.encryption]\npassphrase_env = \"VAULT_PASS\"\n",
        env.repo().display().to_string(),
        definition(&env, "vault", "")
    );
    fs::write(env.path("config.toml"), config).unwrap();

    let out = env.run(&["backup", "--full"]);
    assert_eq!(
        code(&out),
        2,
        "no passphrase in the environment: a usage error"
    );
    assert!(
        stdout(&out).contains("$VAULT_PASS is not set"),
        "{}",
        stdout(&out)
    );

    let full = env
        .cmd()
        .env("VAULT_PASS", secret)
        .args(["-vv", "backup", "--full"])
        .output()
        .unwrap();
    assert_eq!(code(&full), 0, "{}", stderr(&full));
    write(&src.join("plain.txt"), b"changed\n");
    let diff = env
        .cmd()
        .env("VAULT_PASS", secret)
        .args(["backup", "--diff"])
        .output()
        .unwrap();
    assert_eq!(code(&diff), 0, "{}", stderr(&diff));

    let sets = env.sets("vault");
    let first = sets[0].join(name_of(&sets[0]));
    let plain_test = std::process::Command::new("dar")
        .args(["-Q", "-N", "-t"])
        .arg(&first)
        .output()
        .unwrap();
    assert!(
        !plain_test.status.success(),
        "the archive must not be readable without the key"
    );
    let keyed = std::process::Command::new("dar")
        .args(["-Q", "-N", "-t"])
        .arg(&first)
        .arg("-K")
        .arg(format!("aes:{secret}"))
        .output()
        .unwrap();
    assert!(
        keyed.status.success(),
        "{}",
        String::from_utf8_lossy(&keyed.stderr)
    );
    assert!(
        fs::read_to_string(sets[0].join("MANIFEST.toml"))
            .unwrap()
            .contains("encrypted = true")
    );

    let mut seen = vec![
        fs::read_to_string(&argv_log).unwrap(),
        stdout(&full),
        stderr(&full),
        stderr(&diff),
    ];
    for set in &sets {
        seen.push(fs::read_to_string(set.join("MANIFEST.toml")).unwrap());
    }
    for log in walkdir::WalkDir::new(env.path("home"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
    {
        seen.push(fs::read_to_string(log.path()).unwrap_or_default());
    }
    assert!(seen[0].contains(" -c "), "the wrapper saw the runs");
    for text in &seen {
        assert!(!text.contains("battery"), "the passphrase leaked: {text}");
    }

    // A wrong passphrase is named as such, in seconds; a deep audit does not call the
    // (intact) sets damaged for it.
    let started = std::time::Instant::now();
    let incr = env
        .cmd()
        .env("VAULT_PASS", "not the passphrase")
        .args(["backup", "--incr"])
        .output()
        .unwrap();
    assert_eq!(code(&incr), 1);
    assert!(
        stdout(&incr).contains("wrong passphrase for definition vault"),
        "{}",
        stdout(&incr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let audit = env
        .cmd()
        .env("VAULT_PASS", "not the passphrase")
        .args(["audit", "--deep", "repository"])
        .output()
        .unwrap();
    assert_eq!(code(&audit), 0, "{}", stdout(&audit));
    assert!(
        stdout(&audit).contains("wrong passphrase"),
        "{}",
        stdout(&audit)
    );
}

/// dar-backup parity: more dar options per definition (refused by name when darvault sets
/// them), PAR2 verified before publication when asked, and the definition as it was used
/// recorded in the manifest.
#[test]
fn dar_options_par2_verify_and_the_definition_as_used() {
    let env = Env::new();
    let src = env.path("src-opts");
    write(&src.join("keep.txt"), b"keep\n");
    write(&src.join("big.skip"), b"left out by a dar option\n");
    let config = |options: &str| {
        fs::write(
            env.path("config.toml"),
            format!(
                "repository = {:?}\n[[definition]]\nname = \"opts\"\nsource = {:?}\npar2_verify = true\ndar_options = {options}\n",
                env.repo().display().to_string(),
                src.display().to_string()
            ),
        )
        .unwrap();
    };
    config("[\"-R/etc\"]");
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("dar_options"), "{}", stderr(&out));
    assert!(stderr(&out).contains("-R/etc"), "{}", stderr(&out));

    config("[\"--exclude=*.skip\"]");
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let set = env.sets("opts").pop().unwrap();
    let listing = std::process::Command::new("dar")
        .args(["-Q", "-N", "-l"])
        .arg(set.join(name_of(&set)))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("keep.txt") && !listing.contains("big.skip"),
        "{listing}"
    );
    let manifest = darvault::set::Manifest::read(&set).unwrap();
    assert_eq!(manifest.format, 2);
    assert_eq!(manifest.checks.par2_verify.as_deref(), Some("passed"));
    let used = manifest.definition.unwrap();
    assert_eq!(used.dar_options, ["--exclude=*.skip"]);
    assert_eq!(used.source, src.display().to_string());
    // `list --json` shows it too.
    let out = env.run(&["--json", "list", "-d", "opts"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = &v["definitions"][0]["sets"][0]["definition"];
    assert_eq!(
        shown["dar_options"],
        serde_json::json!(["--exclude=*.skip"])
    );
    assert_eq!(
        shown["source"],
        serde_json::json!(src.display().to_string())
    );
}

/// A source file darvault may not read (run as a user without the power to read others'
/// files: root with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped) is named in the
/// summary, the JSON and the set's manifest, with dar's reason; the set is published with
/// warnings (exit 6), and the next INCR names it again.
#[test]
fn unreadable_source_files_are_named_in_the_summary_the_json_and_the_manifest() {
    let env = Env::new();
    let src = env.path("src-locked");
    write(&src.join("ok.txt"), b"ok\n");
    write(&src.join("private/locked.txt"), b"secret\n");
    fs::set_permissions(
        src.join("private/locked.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    env.config(&definition(&env, "locked", ""));
    let unprivileged = |args: &[&str]| {
        let darvault = env.cmd();
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
        ])
        .arg(darvault.get_program())
        .args(darvault.get_args())
        .args(args);
        for (k, v) in darvault.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.output().unwrap()
    };
    let out = unprivileged(&["backup", "--full"]);
    assert_eq!(code(&out), 6, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("not saved: private/locked.txt (Permission denied)"),
        "{}",
        stdout(&out)
    );
    let set = env.sets("locked").pop().unwrap();
    let manifest = darvault::set::Manifest::read(&set).unwrap();
    assert_eq!(manifest.checks.not_saved.len(), 1);
    assert_eq!(manifest.checks.not_saved[0].path, "private/locked.txt");
    assert_eq!(manifest.checks.not_saved[0].reason, "Permission denied");

    write(&src.join("ok.txt"), b"changed\n");
    let out = unprivileged(&["--json", "backup", "--incr"]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report.to_string().contains("private/locked.txt"),
        "{report}"
    );
    // dar's own words are in the commands log, which `darvault log --commands` shows for
    // the last run; the run's own log says what it did.
    let out = env.run(&["log", "--commands"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let commands = stdout(&out);
    assert!(commands.contains("=== darvault "), "{commands}");
    assert!(commands.contains(" --incr"), "{commands}");
    assert!(
        !commands.contains(" --full"),
        "the last run only: {commands}"
    );
    assert!(
        commands.contains("$ ") && commands.contains(" -c "),
        "{commands}"
    );
    assert!(
        commands.contains("Error while saving") && commands.contains("private/locked.txt"),
        "{commands}"
    );
    assert!(
        !commands.contains("Adding file to archive"),
        "no per-file chatter: {commands}"
    );
    let out = env.run(&["log"]);
    assert!(stdout(&out).contains("published"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("$ "), "{}", stdout(&out));
}

/// A set of files all larger than the restore test's window (home videos) is still
/// restore-tested: the smallest one is restored and compared in part.
#[test]
fn a_set_of_large_files_is_restore_tested_in_part() {
    let env = Env::new();
    let src = env.path("src-videos");
    let mut rng = fastrand::Rng::with_seed(3);
    for (name, mib) in [("holiday.m2ts", 3), ("wedding.m2ts", 5)] {
        let mut bytes = vec![0u8; mib << 20];
        rng.fill(&mut bytes);
        write(&src.join(name), &bytes);
    }
    env.config(&definition(&env, "videos", "").replace(
        "[definition.restore_test]\ncount = 50\n",
        "[definition.restore_test]\ncount = 50\nmax_size = \"1M\"\n",
    ));
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("restore test passed in part: holiday.m2ts"),
        "{}",
        stdout(&out)
    );
    let manifest = darvault::set::Manifest::read(&env.sets("videos")[0]).unwrap();
    let record = manifest.checks.restore_test;
    assert_eq!((record.outcome.as_str(), record.compared), ("passed", 1));
    assert!(record.partial.unwrap().starts_with("holiday.m2ts"));
}

/// A chain never grows past `max_chain`: the INCR that would make it longer is a DIFF.
#[test]
fn an_incr_that_would_pass_max_chain_is_made_as_a_diff() {
    let env = Env::new();
    let src = env.path("src-long");
    write(&src.join("a.txt"), b"0\n");
    env.config(&definition(&env, "long", "max_chain = 3\n"));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    for round in 1..=3 {
        write(&src.join("a.txt"), format!("{round}\n").as_bytes());
        let out = env.run(&["backup", "--incr"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let levels: Vec<String> = env
        .sets("long")
        .iter()
        .map(|s| name_of(s).split('_').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(levels, ["FULL", "INCR", "INCR", "DIFF"]);
    let last = darvault::set::Manifest::read(&env.sets("long")[3]).unwrap();
    assert_eq!(last.set.chain, [name_of(&env.sets("long")[0])]);
}

/// A large archive is tested as two halves side by side (some subtrees, then everything but
/// them): damage to a file of either half fails the set, and nothing is published.
#[test]
fn a_large_archive_tested_in_halves_catches_damage_in_either() {
    let env = Env::new();
    let src = env.path("src-media");
    // Random bytes, stored as they are (no compression), with a mark 100 MiB into each big
    // file: after dar -c, one byte of the archive is changed where the mark is stored.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for (name, mb) in [
        ("first/a.bin", 150),
        ("second/b.bin", 150),
        ("notes.txt", 0),
    ] {
        let mut data: Vec<u8> = (0..mb * (1 << 20) + 100)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        if mb > 0 {
            let mark = format!("DAMAGE-HERE-{}", &name[..5]);
            data[100 << 20..(100 << 20) + mark.len()].copy_from_slice(mark.as_bytes());
        }
        write(&src.join(name), &data);
    }
    let damage = |half: &str| {
        format!(
            "prev=; for a in \"$@\"; do [ \"$prev\" = -c ] && arch=$a; prev=$a; done\n\
             at=$(grep -obUa 'DAMAGE-HERE-{half}' \"$arch.1.dar\" | head -n 1 | cut -d: -f1)\n\
             [ -n \"$at\" ] || {{ echo 'no mark to damage' >&2; exit 99; }}\n\
             printf X | dd of=\"$arch.1.dar\" bs=1 seek=\"$at\" conv=notrunc status=none"
        )
    };
    let config = |after_create: &str| {
        let tools = dar_wrapper(&env, after_create);
        let text = format!(
            "repository = {:?}\n{tools}{}",
            env.repo().display().to_string(),
            definition(&env, "media", "compression = \"none\"")
        )
        .replace("slice_size = \"128K\"", "slice_size = \"1G\"");
        fs::write(env.path("config.toml"), text).unwrap();
    };
    for half in ["first", "secon"] {
        config(&damage(half));
        let out = env.run(&["backup", "--full"]);
        assert_eq!(code(&out), 1, "damage in {half} must fail the set");
        assert!(stdout(&out).contains("corrupted"), "{}", stdout(&out));
        assert!(env.sets("media").is_empty());
    }
    config("true");
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let log = stdout(&env.run(&["log", "--commands"]));
    let tests: Vec<&str> = log.lines().filter(|l| l.contains(" -t ")).collect();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        // The halves have 150 MiB each: one is "first", the other all but "first".
        assert_eq!(tests.len(), 2, "{log}");
        assert!(tests.iter().any(|l| l.ends_with(" -g first")), "{log}");
        assert!(tests.iter().any(|l| l.ends_with(" -P first")), "{log}");
    } else {
        assert_eq!(tests.len(), 1, "{log}");
    }
    dar_test(&env.sets("media")[0]);
}

/// A backup killed at the rename that publishes its set leaves a staging folder that holds a
/// finished manifest: audit names it as unfinished work, never as a set (exit 0), and the next
/// backup removes it.
#[test]
fn a_backup_killed_at_publication_leaves_a_leftover_the_next_run_removes() {
    let env = Env::new();
    awkward_tree(&env.path("src-docs"));
    env.config(&definition(&env, "docs", ""));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    write(&env.path("src-docs/plain.txt"), b"changed\n");
    assert!(
        env.killed_at("rename", 1, &["backup", "--diff"]),
        "the publishing rename was reached"
    );
    let staging = || -> Vec<std::path::PathBuf> {
        fs::read_dir(env.repo().join("docs"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| name_of(p).starts_with(".staging."))
            .collect()
    };
    let left = staging();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].join("MANIFEST.toml").is_file(),
        "killed at publication"
    );

    let out = env.run(&["--json", "audit", "repository"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copies"][0]["sets"].as_array().unwrap().len(), 1);
    assert!(
        report["copies"][0]["problems"]
            .to_string()
            .contains("staging leftover"),
        "{report}"
    );
    assert_eq!(code(&env.run(&["backup", "--diff"])), 0);
    assert!(staging().is_empty(), "the next backup removed it");
    assert_eq!(env.sets("docs").len(), 2);
}
