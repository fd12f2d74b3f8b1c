//! Copies outlive versions: a copy written by darvault 0.1.0 (kept beside the project, in
//! shared/fixtures/copy-0.1.0) is audited, restored as of each of its sets and repaired by
//! this version, as it is.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The fixture's folder; a run in CI without it fails (it is never skipped silently).
fn fixture() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/copy-0.1.0");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: the copy every version must read",
        dir.display()
    );
    eprintln!(
        "SKIPPED LOUDLY: {} is not here (it is in CI)",
        dir.display()
    );
    None
}

/// `sha256sum` of every regular file under `root`, as `find . -type f | sort | sha256sum`
/// prints it.
fn sums(root: &Path) -> String {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_owned())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let relative = f.strip_prefix(root).unwrap().display();
            let sha = darvault::hashing::sha256_hex(&fs::read(f).unwrap());
            format!("{sha}  ./{relative}\n")
        })
        .collect()
}

/// The set of the copy's `docs` whose name holds `level` ("_FULL_", "_DIFF_").
fn set_of(copy: &Path, level: &str) -> PathBuf {
    fs::read_dir(copy.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| name_of(p).contains(level))
        .unwrap()
}

#[test]
fn a_copy_made_by_darvault_0_1_0_audits_restores_and_repairs() {
    let Some(fixture) = fixture() else {
        return;
    };
    let env = Env::new();
    let copy = env.path("copy");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(fixture.join("copy"))
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let copy_arg = copy.display().to_string();
    assert_eq!(code(&env.run(&["audit", &copy_arg])), 0);

    let expected =
        |level: &str| fs::read_to_string(fixture.join(format!("expected-{level}.sha256"))).unwrap();
    // The tree restored from the copy into `target`, as of `when` (None: the newest set).
    let restored = |target: &str, when: Option<&str>| {
        let target = env.path(target);
        let mut args = vec!["restore", "--from", &copy_arg, "-d", "docs"];
        args.extend(when.map(|w| ["--as-of", w]).into_iter().flatten());
        let target_arg = target.display().to_string();
        args.extend(["--target", &target_arg]);
        assert_eq!(code(&env.run(&args)), 0);
        sums(&target)
    };
    assert_eq!(restored("restored-newest", None), expected("incr"));
    let manifest = fs::read_to_string(set_of(&copy, "_DIFF_").join("MANIFEST.toml")).unwrap();
    let created = manifest
        .lines()
        .find_map(|l| l.strip_prefix("created = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    assert_eq!(restored("restored-diff", Some(&created)), expected("diff"));

    // Bitrot in a slice of the FULL: repaired in place with the set's own PAR2.
    let full = set_of(&copy, "_FULL_");
    let slice = full.join(format!("{}.1.dar", name_of(&full)));
    let mut bytes = fs::read(&slice).unwrap();
    for at in [4000, 4001, 4002, 4003] {
        bytes[at] ^= 0x5a;
    }
    fs::write(&slice, bytes).unwrap();
    assert_eq!(code(&env.run(&["audit", &copy_arg])), 4);
    assert_eq!(code(&env.run(&["audit", &copy_arg, "--repair"])), 0);
    for set in fs::read_dir(copy.join("docs")).unwrap().flatten() {
        sha256sum_check(&set.path());
    }
}
