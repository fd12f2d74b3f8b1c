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

fn darvault(env: &Env, args: &[&str]) -> std::process::Output {
    let out = env.cmd().args(args).output().unwrap();
    eprintln!(
        "$ darvault {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
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
    assert_eq!(code(&darvault(&env, &["audit", &copy_arg])), 0);

    let expected =
        |level: &str| fs::read_to_string(fixture.join(format!("expected-{level}.sha256")));
    let newest = env.path("restored-newest");
    let out = darvault(
        &env,
        &[
            "restore",
            "--from",
            &copy_arg,
            "-d",
            "docs",
            "--target",
            &newest.display().to_string(),
        ],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(sums(&newest), expected("incr").unwrap());

    let diff = fs::read_dir(copy.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| name_of(p).contains("_DIFF_"))
        .unwrap();
    let manifest = fs::read_to_string(diff.join("MANIFEST.toml")).unwrap();
    let created = manifest
        .lines()
        .find_map(|l| l.strip_prefix("created = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let as_of_diff = env.path("restored-diff");
    let out = darvault(
        &env,
        &[
            "restore",
            "--from",
            &copy_arg,
            "-d",
            "docs",
            "--as-of",
            &created,
            "--target",
            &as_of_diff.display().to_string(),
        ],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(sums(&as_of_diff), expected("diff").unwrap());

    // Bitrot in a slice of the FULL: repaired in place with the set's own PAR2.
    let full = fs::read_dir(copy.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| name_of(p).contains("_FULL_"))
        .unwrap();
    let slice = full.join(format!("{}.1.dar", name_of(&full)));
    let mut bytes = fs::read(&slice).unwrap();
    for at in [4000, 4001, 4002, 4003] {
        bytes[at] ^= 0x5a;
    }
    fs::write(&slice, bytes).unwrap();
    assert_eq!(code(&darvault(&env, &["audit", &copy_arg])), 4);
    assert_eq!(code(&darvault(&env, &["audit", &copy_arg, "--repair"])), 0);
    for set in fs::read_dir(copy.join("docs")).unwrap().flatten() {
        sha256sum_check(&set.path());
    }
}
