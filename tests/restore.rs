//! Restore: whole trees and single paths as of any time, from any copy, with real dar.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn definition(env: &Env, extra_destinations: &str) {
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"128K\"\n\n{extra_destinations}",
        env.path("src").display().to_string()
    ));
}

/// Back up at `level` and return the state of the source and the set's creation time.
fn backup(env: &Env, level: &str) -> (BTreeMap<String, Node>, String) {
    assert_eq!(code(&env.run(&["backup", level])), 0);
    let newest = env.sets("docs").pop().unwrap();
    let manifest = fs::read_to_string(newest.join("MANIFEST.toml")).unwrap();
    let created = manifest
        .lines()
        .find_map(|l| l.strip_prefix("created = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    // The next set starts strictly later than this one.
    std::thread::sleep(std::time::Duration::from_millis(50));
    (snapshot(&env.path("src")), created)
}

fn restore(env: &Env, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--json", "restore", "-d", "docs"];
    all.extend_from_slice(args);
    env.run(&all)
}

#[test]
fn every_point_in_time_restores_exactly_and_deletions_stay_deleted() {
    let env = Env::new();
    let src = env.path("src");
    awkward_tree(&src);
    definition(&env, "");
    let mut points = Vec::new();
    points.push(backup(&env, "--full"));
    // The rename/delete trap: one file renamed, another deleted, a folder removed.
    fs::rename(src.join("plain.txt"), src.join("renamed.txt")).unwrap();
    fs::remove_file(src.join("modes/private")).unwrap();
    fs::remove_dir_all(src.join("empty")).unwrap();
    points.push(backup(&env, "--diff"));
    write(&src.join("after diff.txt"), b"new\n");
    write(&src.join("renamed.txt"), b"renamed and edited\n");
    points.push(backup(&env, "--incr"));
    fs::remove_file(src.join("after diff.txt")).unwrap();
    write(&src.join("dir with spaces/another.txt"), b"another\n");
    points.push(backup(&env, "--full"));
    write(&src.join("plain.txt"), b"plain is back\n");
    points.push(backup(&env, "--diff"));

    for (i, (state, created)) in points.iter().enumerate() {
        let target = env.path(&format!("restored-{i}"));
        let out = restore(
            &env,
            &[
                "--as-of",
                created,
                "--target",
                &target.display().to_string(),
            ],
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_same_tree(state, &snapshot(&target));
    }

    // One path, as of the FULL and as of the DIFF that deleted it: absent, never resurrected.
    let target = env.path("one-file-full");
    let out = restore(
        &env,
        &[
            "--as-of",
            &points[0].1,
            "--target",
            &target.display().to_string(),
            "modes/private",
        ],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(fs::read(target.join("modes/private")).unwrap(), b"secret\n");
    let target = env.path("one-file-diff");
    let out = restore(
        &env,
        &[
            "--as-of",
            &points[1].1,
            "--target",
            &target.display().to_string(),
            "modes/private",
        ],
    );
    assert_eq!(code(&out), 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["absent"], serde_json::json!(["modes/private"]));
    assert!(!target.join("modes/private").exists());

    // A folder as of the INCR: the renamed file under its new name, with its new content.
    let target = env.path("one-dir");
    let out = restore(
        &env,
        &[
            "--as-of",
            &points[2].1,
            "--target",
            &target.display().to_string(),
            "renamed.txt",
            "dir with spaces",
        ],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(
        fs::read(target.join("renamed.txt")).unwrap(),
        b"renamed and edited\n"
    );
    assert!(target.join("dir with spaces/file with spaces.txt").exists());
    assert!(!target.join("plain.txt").exists());

    // Before the first set: nothing to restore, said clearly.
    let out = restore(
        &env,
        &[
            "--as-of",
            "2001-01-01",
            "--target",
            &env.path("too-early").display().to_string(),
        ],
    );
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("no set of docs"), "{}", stderr(&out));
}

#[test]
fn a_disk_in_a_drawer_restores_without_config_or_state() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let usb = env.path("usb");
    definition(
        &env,
        &format!(
            "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n",
            usb.display().to_string()
        ),
    );
    let (_, _) = backup(&env, "--full");
    write(&env.path("src/plain.txt"), b"changed\n");
    let (state, _) = backup(&env, "--diff");
    assert_eq!(code(&env.run(&["replicate"])), 0);
    fs::remove_dir_all(env.repo()).unwrap();

    let target = env.path("restored");
    let out = Command::new(env!("CARGO_BIN_EXE_darvault"))
        .env("HOME", env.path("elsewhere"))
        .env("XDG_CONFIG_HOME", env.path("elsewhere/config"))
        .env("XDG_STATE_HOME", env.path("elsewhere/state"))
        .args(["restore", "-d", "docs", "--from"])
        .arg(&usb)
        .arg("--target")
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&state, &snapshot(&target));
    assert!(
        !env.path("elsewhere/state").exists()
            || fs::read_dir(env.path("elsewhere/state")).unwrap().count() == 0
    );
}

#[test]
fn unsafe_targets_and_damaged_sets_are_refused_before_anything_is_written() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    definition(&env, "");
    backup(&env, "--full");
    let busy = env.path("busy");
    write(&busy.join("keep.txt"), b"mine\n");
    for (target, why) in [
        (busy.display().to_string(), "not empty"),
        ("/etc".into(), "system folder"),
        ("/usr/local/x".into(), "system folder"),
    ] {
        let out = restore(&env, &["--target", &target]);
        assert_eq!(code(&out), 2, "{target}");
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    let link = env.path("link");
    std::os::unix::fs::symlink(&busy, &link).unwrap();
    let out = restore(&env, &["--target", &link.display().to_string()]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("symlink"));
    assert_eq!(
        fs::read_dir(&busy).unwrap().count(),
        1,
        "nothing was written"
    );
    let out = restore(
        &env,
        &[
            "--target",
            &busy.display().to_string(),
            "--overwrite",
            "plain.txt",
        ],
    );
    assert_eq!(code(&out), 0);
    assert!(busy.join("keep.txt").exists() && busy.join("plain.txt").exists());

    // A missing interior slice is caught before dar runs.
    let set = env.sets("docs").pop().unwrap();
    fs::remove_file(set.join(format!("{}.2.dar", name_of(&set)))).unwrap();
    let out = restore(
        &env,
        &["--target", &env.path("fresh").display().to_string()],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("damaged or missing") && stderr(&out).contains(".2.dar"),
        "{}",
        stderr(&out)
    );
    assert!(!Path::new(&env.path("fresh")).join("plain.txt").exists());
}

#[test]
fn a_chain_restores_from_an_s3_copy() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let (s3, _) = destination("s3", "restore", "");
    definition(&env, &s3);
    backup(&env, "--full");
    fs::remove_file(env.path("src/plain.txt")).unwrap();
    let (state, _) = backup(&env, "--incr");
    assert_eq!(code(&env.run(&["replicate"])), 0);
    let target = env.path("restored");
    let out = restore(
        &env,
        &["--from", "s3", "--target", &target.display().to_string()],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&state, &snapshot(&target));
}
