//! Hostile or broken copies: a disk found in a drawer is untrusted input. darvault never reads,
//! writes or runs anything outside the copy (symbolic links are refused, not followed), one
//! set's damage is that set's verdict and the audit goes on, and verdicts say what is true.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A repository with a FULL (several slices) and a DIFF, copied as a disk found in a drawer.
fn drawer(env: &Env) -> PathBuf {
    let src = env.path("src");
    awkward_tree(&src);
    let mut media = vec![0u8; 900_000];
    fastrand::Rng::with_seed(4).fill(&mut media);
    write(&src.join("media/clip.mp4"), &media);
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"128K\"\n",
        src.display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    write(&src.join("plain.txt"), b"changed\n");
    assert_eq!(code(&env.run(&["backup", "--diff"])), 0);
    let disk = env.path("drawer");
    let status = Command::new("cp")
        .arg("-a")
        .arg(env.repo())
        .arg(&disk)
        .status()
        .unwrap();
    assert!(status.success());
    disk
}

/// The FULL then the DIFF on a copy.
fn sets_on(copy: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(copy.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("MANIFEST.toml").exists())
        .collect();
    v.sort_by_key(|p| !name_of(p).contains("_FULL_"));
    v
}

/// `darvault --json audit COPY ARGS` with no config, to run.
fn audit_command(env: &Env, copy: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_darvault"));
    command
        .env("HOME", env.path("home"))
        .env("XDG_STATE_HOME", env.path("home/.local/state"))
        .env("XDG_CONFIG_HOME", env.path("nowhere"))
        .args(["--json", "audit"])
        .arg(copy)
        .args(args);
    command
}

/// `darvault --json audit COPY ARGS` with no config: (exit code, report).
fn audit(env: &Env, copy: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = audit_command(env, copy, args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    (
        code(&out),
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `root` with its bytes (symlinks not followed).
fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_owned(), fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn problems(report: &serde_json::Value) -> String {
    report["copies"][0]["problems"].to_string()
}

#[test]
fn symbolic_links_in_a_copy_are_refused_and_nothing_outside_is_touched() {
    let env = Env::new();
    let disk = drawer(&env);
    let sets = sets_on(&disk);
    // Outside the copy: a damaged set (a repair through a link would rewrite it) and a file.
    let outside = env.path("outside");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&sets[1])
        .arg(&outside)
        .status()
        .unwrap();
    assert!(status.success());
    let slice = outside.join(format!("{}.1.dar", name_of(&sets[1])));
    flip(&slice, 100);
    fs::write(env.path("secret.txt"), b"not yours").unwrap();
    // The DIFF's folder becomes a link to the outside set; the FULL's bundle a link outside;
    // its SHA256SUMS a link to an outside file.
    fs::remove_dir_all(&sets[1]).unwrap();
    symlink(&outside, &sets[1]).unwrap();
    let bundle = sets[0].join("bundle");
    fs::remove_dir_all(&bundle).unwrap();
    let outside_bundle = env.path("outside-bundle");
    fs::create_dir_all(&outside_bundle).unwrap();
    symlink(&outside_bundle, &bundle).unwrap();
    fs::remove_file(sets[0].join("SHA256SUMS")).unwrap();
    symlink(env.path("secret.txt"), sets[0].join("SHA256SUMS")).unwrap();
    let before = (
        tree(&outside),
        tree(&outside_bundle),
        fs::read(env.path("secret.txt")).unwrap(),
    );

    let (code, report, _) = audit(&env, &disk, &["--repair"]);
    assert_ne!(code, 0, "{report}");
    let found = problems(&report);
    assert!(found.contains("symbolic link"), "{found}");
    assert_eq!(
        before,
        (
            tree(&outside),
            tree(&outside_bundle),
            fs::read(env.path("secret.txt")).unwrap()
        ),
        "nothing outside the copy changed"
    );
    // A linked definition folder is refused too, not taken for an empty copy.
    let other = env.path("other-disk");
    fs::create_dir_all(&other).unwrap();
    symlink(disk.join("docs"), other.join("docs")).unwrap();
    let (code, report, _) = audit(&env, &other, &[]);
    assert_ne!(code, 0, "{report}");
    assert!(problems(&report).contains("symbolic link"), "{report}");
}

#[test]
fn a_broken_set_is_that_sets_verdict_and_the_audit_goes_on() {
    let env = Env::new();
    let disk = drawer(&env);
    let sets = sets_on(&disk);
    let full = &sets[0];
    // The FULL loses its PAR2 index; in the DIFF a slice becomes a directory.
    let index = full.join(format!("{}.par2", name_of(full)));
    let index = if index.exists() {
        index
    } else {
        full.join(format!("{}.part01.par2", name_of(full)))
    };
    fs::remove_file(&index).unwrap();
    let diff_slice = sets[1].join(format!("{}.1.dar", name_of(&sets[1])));
    fs::remove_file(&diff_slice).unwrap();
    fs::create_dir(&diff_slice).unwrap();

    let (code, report, _) = audit(&env, &disk, &[]);
    let reported = report["copies"][0]["sets"].as_array().unwrap();
    assert_eq!(reported.len(), 2, "both sets have a verdict: {report}");
    let status = |name: &str| {
        reported.iter().find(|s| s["set"] == name).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The FULL's data is intact: only its redundancy is damaged.
    assert_eq!(status(&name_of(full)), "redundancy-damaged", "{report}");
    // A folder where a slice belongs: nothing is written over it; the verdict says what to do.
    assert_eq!(status(&name_of(&sets[1])), "unrepairable", "{report}");
    assert!(
        report.to_string().contains(&name_of(&index)),
        "the file is named"
    );
    assert_eq!(code, 5);
    let (code, report, _) = audit(&env, &disk, &["--repair"]);
    assert_eq!(code, 5, "{report}");
    assert!(
        report.to_string().contains("a folder stands where"),
        "{report}"
    );
    assert!(diff_slice.is_dir());

    // --repair makes the PAR2 index again from the proven data.
    fs::remove_dir(&diff_slice).unwrap();
    fs::copy(
        env.repo()
            .join("docs")
            .join(name_of(&sets[1]))
            .join(name_of(&diff_slice)),
        &diff_slice,
    )
    .unwrap();
    let (code, report, _) = audit(&env, &disk, &["--repair"]);
    assert_eq!(code, 0, "{report}");
    sha256sum_check(full);
    par2_verify_all(full);
}

#[test]
fn damaged_redundancy_alone_leaves_the_data_restorable() {
    let env = Env::new();
    let disk = drawer(&env);
    let sets = sets_on(&disk);
    let full = &sets[0];
    let vol = fs::read_dir(full)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| name_of(p).contains(".vol"))
        .unwrap();
    flip(&vol, 200);
    fs::write(full.join("bundle/RESTORE.txt"), b"tampered").unwrap();
    let (code, report, _) = audit(&env, &disk, &[]);
    assert_eq!(code, 4, "{report}");
    for s in report["copies"][0]["sets"].as_array().unwrap() {
        assert!(s["chain_broken"].is_null(), "no chain is broken: {report}");
    }
    let full_report = report["copies"][0]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["set"] == name_of(full).as_str())
        .unwrap()
        .clone();
    assert_eq!(full_report["status"], "redundancy-damaged", "{report}");
}

#[test]
fn a_set_folder_is_audited_as_that_set_and_a_folder_without_sets_is_an_error() {
    let env = Env::new();
    let disk = drawer(&env);
    let sets = sets_on(&disk);
    let (code, report, _) = audit(&env, &sets[0], &[]);
    assert_eq!(code, 0, "{report}");
    let set = &report["copies"][0]["sets"][0];
    assert_eq!(set["status"], "ok");
    assert_eq!(set["set"], name_of(&sets[0]).as_str());
    assert_eq!(
        set["files"].as_array().unwrap().len(),
        0,
        "no file is stray"
    );

    let empty = env.path("empty");
    fs::create_dir_all(&empty).unwrap();
    let (code, _, _) = audit(&env, &empty, &[]);
    assert_eq!(code, 1);
    let ordinary = env.path("src");
    let (code, report, _) = audit(&env, &ordinary, &[]);
    assert_eq!(code, 1);
    assert!(report.to_string().contains("no archive set"), "{report}");
}

#[test]
fn names_with_control_characters_are_escaped_on_a_terminal() {
    let env = Env::new();
    let disk = drawer(&env);
    let sets = sets_on(&disk);
    fs::write(sets[0].join("evil\x1b[31mred\nname"), b"?").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_darvault"))
        .env("HOME", env.path("home"))
        .env("XDG_STATE_HOME", env.path("home/.local/state"))
        .env("XDG_CONFIG_HOME", env.path("nowhere"))
        .arg("audit")
        .arg(&disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\x1b'), "raw escape printed: {text:?}");
    assert!(text.contains("evil\\033[31mred\\nname"), "{text}");
}

/// Replace the bundled dar_static of `full` (its chain's tools) with `bytes`, and its manifest
/// with one that records them: a copy consistent with itself, and crafted.
fn plant_dar_static(full: &Path, bytes: &[u8]) {
    let planted = full.join(bundled("dar_static"));
    fs::remove_file(&planted).unwrap();
    fs::write(&planted, bytes).unwrap();
    let manifest_path = full.join("MANIFEST.toml");
    let mut manifest =
        darvault::set::Manifest::parse(&fs::read_to_string(&manifest_path).unwrap()).unwrap();
    for f in &mut manifest.files {
        if f.path == bundled("dar_static") {
            f.size = bytes.len() as u64;
            f.sha256 = darvault::hashing::sha256_hex(bytes);
        }
    }
    manifest.write(full).unwrap();
    sha256sum_check(full);
}

#[test]
fn a_bundled_binary_this_darvault_did_not_bundle_is_never_run_unasked() {
    let env = Env::new();
    let disk = drawer(&env);
    let sets = sets_on(&disk);
    let full = &sets[0]; // the chain's tools are in its FULL
    // A consistent copy whose bundled dar_static is a script: it leaves a mark, then does
    // the real work (so the set still restores when the user does trust it).
    let mark = env.path("it-ran");
    let script = format!(
        "#!/bin/sh\n: > {:?}\nexec /usr/bin/dar_static \"$@\"\n",
        mark.display().to_string()
    );
    plant_dar_static(full, script.as_bytes());

    // A foreign machine: no state of its own, no config.
    let drill = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_darvault"))
            .env("HOME", env.path("foreign"))
            .env("XDG_STATE_HOME", env.path("foreign/state"))
            .env("XDG_CONFIG_HOME", env.path("foreign/config"))
            .args(["--json", "drill"])
            .arg(&disk)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = drill(&[]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("--trust-bundle"), "{}", stdout(&out));
    assert!(!mark.exists(), "the copy's script was run");
    let out = drill(&["--trust-bundle"]);
    assert!(
        mark.exists(),
        "run when the user trusts it: {}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("--trust-bundle"),
        "the report says which binary ran"
    );
}

/// A copy whose bundle holds, in this machine's folder, a program built for another machine
/// (consistent with its manifest, and trusted on request): it is not run, and the drill says
/// why, rather than failing with the kernel's "exec format error" or running it emulated.
#[test]
fn a_bundled_program_built_for_another_machine_is_never_run() {
    let env = Env::new();
    let disk = drawer(&env);
    let sets = sets_on(&disk);
    let full = &sets[0];
    let (other, e_machine): (&str, u16) = match std::env::consts::ARCH {
        "aarch64" => ("x86_64", 62),
        _ => ("aarch64", 183),
    };
    // The smallest static ELF executable header of the other machine: no program headers.
    let mut elf = vec![0u8; 64];
    elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    elf[16..18].copy_from_slice(&2u16.to_le_bytes());
    elf[18..20].copy_from_slice(&e_machine.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    plant_dar_static(full, &elf);
    let out = Command::new(env!("CARGO_BIN_EXE_darvault"))
        .env("HOME", env.path("foreign"))
        .env("XDG_STATE_HOME", env.path("foreign/state"))
        .env("XDG_CONFIG_HOME", env.path("foreign/config"))
        .args(["drill", "--trust-bundle"])
        .arg(&disk)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains(&format!("is built for {other}")), "{said}");
    assert!(!said.contains("  ran "), "{said}");
}

/// A manifest of 100,000 entries is audited in time that grows with the entries, not their
/// square (it took 164 s before; the budget only catches that kind of growth).
#[test]
fn an_audit_of_a_hundred_thousand_entries_takes_seconds() {
    let env = Env::new();
    let disk = drawer(&env);
    let set = sets_on(&disk).remove(0);
    let manifest_path = set.join("MANIFEST.toml");
    let mut manifest =
        darvault::set::Manifest::parse(&fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let listed = manifest.files.len();
    for i in 0..100_000 {
        let path = format!("x/{:03}/f{i:06}", i % 500);
        let data = format!("{i}\n");
        write(&set.join(&path), data.as_bytes());
        manifest.files.push(darvault::set::manifest::FileEntry {
            path,
            size: data.len() as u64,
            sha256: darvault::hashing::sha256_hex(data.as_bytes()),
            role: darvault::set::Role::Bundle,
            parts: None,
        });
    }
    manifest.write(&set).unwrap();
    let started = std::time::Instant::now();
    let (code, report, _) = audit(&env, &set, &[]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["copies"][0]["sets"][0]["files_checked"],
        listed + 100_000
    );
    assert!(took < std::time::Duration::from_secs(120), "took {took:?}");
}

/// `darvault --json audit COPY ARGS` with no config, ended after `limit` if it hangs: (exit
/// code, report); None when it had to be ended.
fn audit_within(
    env: &Env,
    copy: &Path,
    args: &[&str],
    limit: std::time::Duration,
) -> Option<(i32, serde_json::Value)> {
    let mut child = audit_command(env, copy, args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes: a large report would fill the pipe and hold the child.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        text
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = reader.join().unwrap();
    eprintln!("{}", &text[..text.len().min(20_000)]);
    Some((
        status.code().unwrap_or(-1),
        serde_json::from_str(&text).unwrap(),
    ))
}

/// A FIFO (or any file that is not a regular one) where a slice belongs is refused by its type
/// before it is opened: an audit, a deep one and a repair end, name it, and the repair puts a
/// proven slice in its place. (Opened for reading, a FIFO waits for a writer forever.)
#[test]
fn a_fifo_in_place_of_a_slice_is_refused_by_type_and_repaired() {
    let env = Env::new();
    let disk = drawer(&env);
    let full = sets_on(&disk).remove(0);
    let slice = full.join(format!("{}.2.dar", name_of(&full)));
    fs::remove_file(&slice).unwrap();
    let fifo = std::ffi::CString::new(slice.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let limit = std::time::Duration::from_secs(60);
    for args in [&[][..], &["--deep"][..]] {
        let (code, report) =
            audit_within(&env, &disk, args, limit).expect("audit ended (a FIFO must not hold it)");
        assert_eq!(code, 4, "repairable by PAR2: {report}");
        let sets = report["copies"][0]["sets"].to_string();
        assert!(sets.contains("a FIFO"), "{sets}");
    }
    let (code, report) = audit_within(&env, &disk, &["--repair"], limit).expect("the repair ended");
    assert_eq!(code, 0, "{report}");
    assert!(fs::symlink_metadata(&slice).unwrap().is_file());
    sha256sum_check(&full);
}

/// The same with a hundred thousand entries that are missing from the copy: judging the
/// damage (which PAR2 group, which role) is linear in the manifest too. Before, each missing
/// file was compared with every group's file list: minutes of CPU at 100,000.
#[test]
fn an_audit_of_a_hundred_thousand_missing_entries_takes_seconds() {
    let env = Env::new();
    let disk = drawer(&env);
    let set = sets_on(&disk).remove(0);
    let mut manifest =
        darvault::set::Manifest::parse(&fs::read_to_string(set.join("MANIFEST.toml")).unwrap())
            .unwrap();
    for i in 0..100_000 {
        manifest.files.push(darvault::set::manifest::FileEntry {
            path: format!("x/{:03}/f{i:06}", i % 500),
            size: 2,
            sha256: darvault::hashing::sha256_hex(b"x\n"),
            role: darvault::set::Role::Bundle,
            parts: None,
        });
    }
    manifest.write(&set).unwrap();
    let limit = std::time::Duration::from_secs(120);
    for args in [&[][..], &["--repair"][..]] {
        let (code, report) = audit_within(&env, &disk, args, limit).expect("ended in time");
        // Only bundle entries are missing: the data is whole and restores.
        assert_eq!(code, 4, "{}", report["copies"][0]["problems"]);
        let full = report["copies"][0]["sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["set"] == name_of(&set).as_str())
            .unwrap();
        assert_eq!(full["status"], "redundancy-damaged");
        assert_eq!(full["files"].as_array().unwrap().len(), 100_000);
    }
}

/// A copy's lock file that is a symbolic link is never followed: a repairing audit as root
/// would otherwise write its holder's name over whatever the link points at.
#[test]
fn a_lock_file_that_is_a_link_is_refused_and_its_target_untouched() {
    let env = Env::new();
    let disk = drawer(&env);
    let outside = env.path("precious.txt");
    fs::write(&outside, b"precious\n").unwrap();
    let _ = fs::remove_file(disk.join(".darvault.lock"));
    symlink(&outside, disk.join(".darvault.lock")).unwrap();
    let (code, report, _) = audit(&env, &disk, &["--repair"]);
    assert_eq!(code, 1, "{report}");
    let error = report["copies"][0]["error"].as_str().unwrap();
    assert!(error.contains(".darvault.lock"), "{error}");
    assert_eq!(fs::read(&outside).unwrap(), b"precious\n");
}
