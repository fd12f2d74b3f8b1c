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

/// One path restored from the copy `copy` into `target`.
fn restore_from(env: &Env, copy: &str, target: &Path, path: &str) -> std::process::Output {
    let target = target.display().to_string();
    restore(env, &["--from", copy, "--target", &target, path])
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

    // What existed as of the DIFF, from the index of the catalogues: the renamed file under
    // its new name only, the deleted one and the removed folder gone, folders listed.
    let out = restore(&env, &["--list", "--as-of", &points[1].1]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let then: Vec<&str> = points[1].0.keys().map(String::as_str).collect();
    assert_eq!(listed, then);

    // Every version of a name across the sets, oldest first, deletions included.
    let out = env.run(&["--json", "find", "*.txt"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let renamed: Vec<&str> = found["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["path"] == "renamed.txt")
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    // Saved by the DIFF, changed in the INCR, in the second FULL; the last DIFF has it as is.
    assert_eq!(renamed, ["saved", "saved", "saved"]);
    let plain: Vec<&str> = found["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["path"] == "plain.txt")
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(plain, ["saved", "deleted", "saved"]);

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
    assert_eq!(code(&out), 0, "{}", stderr(&out));
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
    // Nothing of what was asked existed then: exit 1 (docs/exit-codes.md), and the report
    // says which path was absent.
    assert_eq!(code(&out), 1, "{}", stderr(&out));
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
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fs::read(target.join("renamed.txt")).unwrap(),
        b"renamed and edited\n"
    );
    assert!(target.join("dir with spaces/file with spaces.txt").exists());
    assert!(!target.join("plain.txt").exists());

    // Both names of the file renamed by the DIFF, as of the DIFF: the new one comes back,
    // the old one is absent, and dar is not asked for a deletion it cannot apply.
    let target = env.path("renamed-pair");
    let out = restore(
        &env,
        &[
            "--as-of",
            &points[1].1,
            "--target",
            &target.display().to_string(),
            "plain.txt",
            "renamed.txt",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_eq!(fs::read(target.join("renamed.txt")).unwrap(), b"plain\n");
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
    assert_eq!(code(&out), 0, "{}", stderr(&out));
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

/// Bytes that do not compress (so slices fill up as they would with photos).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn one_file_from_a_cloud_copy_downloads_only_the_sets_and_slices_that_hold_it() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..8 {
        write(&src.join(format!("media/clip{i}.bin")), &noise(i, 300_000));
    }
    write(&src.join("docs/note.txt"), b"first version\n");
    let (s3, _) = destination("s3", "selective", "");
    definition(&env, &s3);
    backup(&env, "--full");
    write(&src.join("docs/note.txt"), b"second version\n");
    backup(&env, "--incr");
    assert_eq!(code(&env.run(&["replicate"])), 0);
    let sets = env.sets("docs");
    let full_slices: u64 = fs::read_dir(&sets[0])
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".dar"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let restore_one = |path: &str, target: &str| {
        let target = env.path(target);
        let out = restore_from(&env, "s3", &target, path);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (target, report)
    };

    // Changed in the INCR: the FULL's slices are not fetched at all.
    let (target, report) = restore_one("docs/note.txt", "note");
    assert_eq!(
        fs::read(target.join("docs/note.txt")).unwrap(),
        b"second version\n"
    );
    assert_eq!(report["applied"].as_array().unwrap().len(), 1);
    assert_eq!(report["chain"].as_array().unwrap().len(), 2);
    let downloaded = report["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded < full_slices / 4,
        "{downloaded} bytes downloaded, the FULL's slices are {full_slices}"
    );

    // Only in the FULL: its first and last slices and those holding the file, not all.
    let (target, report) = restore_one("media/clip3.bin", "clip");
    assert!(fs::read(target.join("media/clip3.bin")).unwrap() == noise(3, 300_000));
    assert_eq!(report["applied"].as_array().unwrap().len(), 1);
    let downloaded = report["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded < full_slices * 3 / 4,
        "{downloaded} bytes downloaded, the FULL's slices are {full_slices}"
    );
}

#[test]
fn a_drill_restores_a_sample_with_only_the_bundle_and_fails_loudly_on_a_broken_one() {
    let env = Env::new();
    let src = env.path("src");
    awkward_tree(&src);
    definition(&env, "");
    backup(&env, "--full");
    write(&src.join("changed later.txt"), b"in the INCR\n");
    backup(&env, "--incr");

    let out = env.run(&["--json", "drill", "--sample", "4"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drill = &report["drills"][0];
    assert!(drill["failure"].is_null(), "{drill}");
    let files = drill["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    for f in files {
        assert_eq!(f["result"], "identical to the source", "{f}");
    }

    // A copy whose bundled dar is damaged fails the drill (exit 1), naming the file.
    let full = env.sets("docs").remove(0); // the chain's tools are in its FULL
    let dar_static = full.join(bundled("dar_static"));
    let mut bytes = fs::read(&dar_static).unwrap();
    fs::remove_file(&dar_static).unwrap(); // a hard link shared with the repository's store
    bytes[5000] ^= 0xff;
    fs::write(&dar_static, bytes).unwrap();
    let out = env.run(&["drill", &env.path("repo").display().to_string()]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&bundled("dar_static")),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("FAILED"), "also on stderr");

    // One that is a symbolic link (to this machine's own dar_static) is refused, and nothing
    // says it ran or was trusted.
    fs::remove_file(&dar_static).unwrap();
    std::os::unix::fs::symlink("/usr/bin/dar_static", &dar_static).unwrap();
    let out = env.run(&["drill", &env.path("repo").display().to_string()]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let said = stdout(&out);
    assert!(!said.contains("  ran "), "{said}");
    assert!(!said.contains("identical to"), "{said}");
    assert!(said.contains("did not run"), "{said}");

    // A chain none of whose sets lists a dar_static is told so, not that a binary with an
    // empty SHA-256 is untrusted.
    let mut manifest =
        darvault::set::Manifest::parse(&fs::read_to_string(full.join("MANIFEST.toml")).unwrap())
            .unwrap();
    manifest.files.retain(|f| f.path != bundled("dar_static"));
    manifest.write(&full).unwrap();
    let out = env.run(&["drill", &env.path("repo").display().to_string()]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let said = stdout(&out);
    assert!(
        said.contains("carries a dar_static for this machine"),
        "{said}"
    );
    assert!(!said.contains("SHA-256 )"), "{said}");
}

/// "As of now" from a copy that lacks the newest set is older than the newest backup: the
/// report names the set it lacks.
#[test]
fn a_copy_lacking_the_newest_set_is_said() {
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
    backup(&env, "--full");
    assert_eq!(code(&env.run(&["replicate"])), 0);
    write(&env.path("src/plain.txt"), b"newer\n");
    backup(&env, "--diff");
    let diff = name_of(&env.sets("docs")[1]);
    let target = env.path("restored");
    let out = restore(
        &env,
        &["--from", "usb", "--target", &target.display().to_string()],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["newer_elsewhere"], diff.as_str(), "{report}");
}

/// Folders are in the version index: an empty folder restores by name as of a time, is
/// listed by `restore --list`, and one deleted since is absent as of later times.
#[test]
fn an_empty_folder_restores_by_name_and_is_listed() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a\n");
    fs::create_dir_all(src.join("kept/empty")).unwrap();
    definition(&env, "");
    let (_, full) = backup(&env, "--full");
    write(&src.join("b.txt"), b"b\n");
    fs::remove_dir_all(src.join("kept")).unwrap();
    let (_, incr) = backup(&env, "--incr");

    let target = env.path("as-of-full");
    let out = restore(
        &env,
        &[
            "--as-of",
            &full,
            "--target",
            &target.display().to_string(),
            "kept/empty",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(target.join("kept/empty").is_dir());
    let out = restore(&env, &["--list", "--as-of", &full, "kept"]);
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["kept", "kept/empty"]);

    let target = env.path("as-of-incr");
    let out = restore(
        &env,
        &[
            "--as-of",
            &incr,
            "--target",
            &target.display().to_string(),
            "kept/empty",
        ],
    );
    assert_eq!(code(&out), 1, "deleted since: nothing to restore");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["absent"], serde_json::json!(["kept/empty"]));
}

/// A folder asked for as of a DIFF that both changed a file in it and deleted another: only
/// the DIFF is needed, and the deletion of a file the target never held is not a failure.
#[test]
fn a_folder_with_an_edit_and_a_deletion_restores_from_the_diff_alone() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("notes/monday.txt"), b"monday\n");
    write(&src.join("notes/tuesday.txt"), b"tuesday\n");
    definition(&env, "");
    backup(&env, "--full");
    write(&src.join("notes/monday.txt"), b"monday, edited\n");
    fs::remove_file(src.join("notes/tuesday.txt")).unwrap();
    let (state, _) = backup(&env, "--diff");
    let target = env.path("restored");
    let out = restore(&env, &["--target", &target.display().to_string(), "notes"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["not_restored"], serde_json::json!([]));
    let expected: BTreeMap<String, Node> = state
        .into_iter()
        .filter(|(p, _)| p.starts_with("notes"))
        .collect();
    assert_same_tree(&expected, &snapshot(&target));
}

/// dar's slicing listing of `path` (and the folders above it) in `set`'s catalogue.
fn slicing_listing(set: &Path, path: &str) -> String {
    let name = name_of(set);
    let out = Command::new("dar")
        .args(["-Q", "-N", "-l"])
        .arg(set.join(format!("{name}.catalog")))
        .args(["-Tslicing", "-g", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// "1,3-5" as slice numbers.
fn slice_ranges(text: &str) -> Vec<u32> {
    text.split(',')
        .filter(|r| !r.is_empty())
        .flat_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()
        })
        .collect()
}

/// The slices of `set` holding `path` (and the folders above it), as dar lists them.
fn slices_of(set: &Path, path: &str) -> Vec<u32> {
    let text = slicing_listing(set, path);
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("All displayed files have their data in slice range ["))
        .unwrap()
        .trim_end_matches(']');
    slice_ranges(summary)
}

/// A FULL of `src` in 1 MiB slices, replicated to a folder copy "usb": the set in the
/// repository and its folder on the copy.
fn full_on_a_usb_copy(env: &Env, src: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let usb = env.path("usb");
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"1M\"\n\n[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n",
        src.display().to_string(),
        usb.display().to_string()
    ));
    backup(env, "--full");
    assert_eq!(code(&env.run(&["replicate"])), 0);
    let set = env.sets("docs").pop().unwrap();
    let on_usb = usb.join("docs").join(name_of(&set));
    (set, on_usb)
}

#[test]
fn a_file_in_a_middle_slice_needs_only_the_ends_of_the_first_and_last() {
    let env = Env::new();
    let src = env.path("src");
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        write(&src.join(name), &noise(i as u64 + 11, 1_600_000));
    }
    let (set, on_usb) = full_on_a_usb_copy(&env, &src);
    let slices = fs::read_dir(&on_usb)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().ends_with(".dar")
                && !e.file_name().to_string_lossy().contains("catalog")
        })
        .count() as u32;
    assert!(slices >= 4, "{slices} slices");
    let (inside, edge): (Vec<&str>, Vec<&str>) =
        ["a.bin", "b.bin", "c.bin"].iter().partition(|f| {
            let s = slices_of(&set, f);
            !s.contains(&1) && !s.contains(&slices)
        });
    assert!(
        !inside.is_empty() && !edge.is_empty(),
        "{inside:?} {edge:?}"
    );

    // Damage in the middle of the first and last slices: bytes dar does not read for a file
    // held elsewhere, and that the slices' ends (proven by their PAR2 blocks) do not cover.
    let name = name_of(&set);
    for n in [1, slices] {
        let slice = on_usb.join(format!("{name}.{n}.dar"));
        let len = fs::metadata(&slice).unwrap().len();
        assert!(len > 400_000, "slice {n}: {len} bytes");
        let mut bytes = fs::read(&slice).unwrap();
        bytes[(len / 2) as usize] ^= 0x5a;
        fs::write(&slice, bytes).unwrap();
    }
    let restore_from_usb = |path: &str, target: &str| {
        let target = env.path(target);
        let out = restore_from(&env, "usb", &target, path);
        (code(&out), target, stderr(&out))
    };
    let (code_inside, target, err) = restore_from_usb(inside[0], "inside");
    assert_eq!(code_inside, 0, "{err}");
    let i = ["a.bin", "b.bin", "c.bin"]
        .iter()
        .position(|f| *f == inside[0])
        .unwrap();
    assert!(fs::read(target.join(inside[0])).unwrap() == noise(i as u64 + 11, 1_600_000));
    // A file whose data is in a damaged slice is refused, nothing written.
    let (code_edge, target, err) = restore_from_usb(edge[0], "edge");
    assert_ne!(code_edge, 0);
    assert!(err.contains("damaged"), "{err}");
    assert!(!target.join(edge[0]).exists());

    // Damage at a slice's very start (its header, which dar reads): the edge is not proven,
    // the whole slice is tried and refused.
    let first = on_usb.join(format!("{name}.1.dar"));
    let mut bytes = fs::read(&first).unwrap();
    bytes[20] ^= 0x5a;
    fs::write(&first, bytes).unwrap();
    let (code_inside, _, err) = restore_from_usb(inside[0], "inside-again");
    assert_ne!(code_inside, 0);
    assert!(err.contains("damaged"), "{err}");
}

/// The slices of `path`'s own row in `set`'s slicing listing (not its folders').
fn own_slices(set: &Path, path: &str) -> Vec<u32> {
    let text = slicing_listing(set, path);
    let row = text
        .lines()
        .find(|l| l.ends_with(&format!(" {path}")))
        .unwrap_or_else(|| panic!("no row for {path}: {text}"));
    slice_ranges(row.split('\t').next().unwrap())
}

/// dar writes a folder's record where it walks the folder, before its files: a file far
/// down a big folder has its data slices after its folder's record. That file is restored
/// without reading the slice holding the record (damaged here, so reading it would refuse
/// the restore), and its folder is made with the mode and time the set records.
#[test]
fn one_file_restores_without_the_slice_holding_its_folders_record() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let src = env.path("src");
    // Laid out in the order dar will walk (readdir's): a big file first at the top, then a
    // folder whose big video comes before its photo.
    let in_walk_order = |dir: &Path, names: [&str; 2], make: &dyn Fn(&Path)| {
        for n in names {
            make(&dir.join(n));
        }
        let walked: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        walked
    };
    fs::create_dir_all(&src).unwrap();
    let tops = in_walk_order(&src, ["one", "two"], &|p| fs::create_dir(p).unwrap());
    write(&tops[0].join("filler.bin"), &noise(40, 3_000_000));
    let album = tops[1].clone();
    let files = in_walk_order(&album, ["a", "b"], &|p| write(p, b""));
    write(&files[0], &noise(41, 3_000_000));
    write(&files[1], &noise(42, 20_000));
    fs::set_permissions(&album, fs::Permissions::from_mode(0o750)).unwrap();
    let touched = Command::new("touch")
        .args(["-m", "-d", "@1577934245"])
        .arg(&album)
        .status()
        .unwrap();
    assert!(touched.success());
    let folder = album.file_name().unwrap().to_string_lossy().into_owned();
    let photo = format!(
        "{folder}/{}",
        files[1].file_name().unwrap().to_string_lossy()
    );
    let (set, on_usb) = full_on_a_usb_copy(&env, &src);
    let name = name_of(&set);
    let last = (1..)
        .take_while(|n| on_usb.join(format!("{name}.{n}.dar")).exists())
        .last()
        .unwrap();
    let record = *own_slices(&set, &folder).last().unwrap();
    let data = own_slices(&set, &photo);
    assert!(
        record != 1 && record != last && !data.contains(&record),
        "the folder's record in slice {record} of {last}, the photo in {data:?}"
    );
    let slice = on_usb.join(format!("{name}.{record}.dar"));
    let mut bytes = fs::read(&slice).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    fs::write(&slice, bytes).unwrap();

    // What a restore killed mid-way leaves in the target does not make it "not empty".
    let target = env.path("restored");
    write(&target.join(".darvault-flat.stale/IMG.jpg"), b"half");
    let out = restore_from(&env, "usb", &target, &photo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(fs::read(target.join(&photo)).unwrap() == fs::read(src.join(&photo)).unwrap());
    let made = fs::metadata(target.join(&folder)).unwrap();
    assert_eq!(made.mode() & 0o7777, 0o750);
    assert_eq!(made.mtime(), 1577934245);
    let leftovers: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from(&folder)]);
}

/// A folder of the target that is a link (an --overwrite restore into a used folder): a flat
/// restore never writes through it; the tree restore it stands for replaces the link with
/// the folder, and nothing lands where the link pointed.
#[test]
fn a_linked_folder_in_the_target_is_not_written_through() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("album/photo.jpg"), &noise(60, 5_000));
    definition(&env, "");
    backup(&env, "--full");
    let target = env.path("used");
    let elsewhere = env.path("elsewhere");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, target.join("album")).unwrap();
    let target_arg = target.display().to_string();
    let out = restore(
        &env,
        &["--overwrite", "--target", &target_arg, "album/photo.jpg"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert!(
        !fs::symlink_metadata(target.join("album"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::read(target.join("album/photo.jpg")).unwrap() == noise(60, 5_000));
}

/// A one-file restore serves the set's slices to dar through pipes, proving each block dar
/// reads by the PAR2 index: damage elsewhere in the slice that holds the file does not stop
/// it, and damage in the file's own data is refused (dar is stopped, nothing is written).
#[test]
fn one_file_restore_proves_only_the_blocks_dar_reads() {
    let env = Env::new();
    let src = env.path("src");
    let (a, b) = (noise(21, 3_000_000), noise(22, 3_000_000));
    write(&src.join("a.bin"), &a);
    write(&src.join("b.bin"), &b);
    let usb = env.path("usb");
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\ncompression = \"none\"\nslice_size = \"64M\"\n\n[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n",
        src.display().to_string(),
        usb.display().to_string()
    ));
    backup(&env, "--full");
    // An INCR above it: the chain's catalogues are listed side by side, and the FULL's slice
    // list is read only once serving it fell short.
    write(&src.join("c.bin"), &noise(23, 1000));
    backup(&env, "--incr");
    assert_eq!(code(&env.run(&["replicate"])), 0);
    let set = env.sets("docs").into_iter().next().unwrap();
    let slice = usb
        .join("docs")
        .join(name_of(&set))
        .join(format!("{}.1.dar", name_of(&set)));
    let mut bytes = fs::read(&slice).unwrap();
    let at = |data: &[u8]| {
        let probe = &data[1_500_000..1_500_064];
        bytes
            .windows(probe.len())
            .position(|w| w == probe)
            .expect("stored as it is")
    };
    let in_a = at(&a);
    bytes[in_a] ^= 0x5a;
    fs::write(&slice, &bytes).unwrap();

    let target = env.path("b");
    let out = restore_from(&env, "usb", &target, "b.bin");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(fs::read(target.join("b.bin")).unwrap() == b);

    let target = env.path("a");
    let out = restore_from(&env, "usb", &target, "a.bin");
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert!(!target.join("a.bin").exists());
}
