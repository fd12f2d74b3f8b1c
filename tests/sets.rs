//! Self-proving sets: PAR2, MANIFEST.toml, SHA256SUMS and the bundle, checked with tools we
//! did not write (sha256sum, Debian's par2 0.8.1, the bundled dar_static).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn config(env: &Env, extra: &str) {
    env.config(&format!(
        "{extra}[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"128K\"\nredundancy = {{ full = 10, diff = 5, incr = 5 }}\n",
        env.path("src").display().to_string()
    ));
}

/// A FULL, a DIFF and an INCR of the awkward tree; returns the sets and the final state.
fn chain(env: &Env) -> (Vec<PathBuf>, std::collections::BTreeMap<String, Node>) {
    chain_with(env, "")
}

fn chain_with(env: &Env, extra: &str) -> (Vec<PathBuf>, std::collections::BTreeMap<String, Node>) {
    let src = env.path("src");
    awkward_tree(&src);
    config(env, extra);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    write(&src.join("plain.txt"), b"changed once\n");
    assert_eq!(code(&env.run(&["backup", "--diff"])), 0);
    fs::remove_file(src.join("modes/script.sh")).unwrap();
    write(&src.join("new/file.txt"), b"new\n");
    assert_eq!(code(&env.run(&["backup", "--incr"])), 0);
    (env.sets("docs"), snapshot(&src))
}

fn par2_cmd(par2: &str, set: &Path, verb: &str, index: &str) -> std::process::Output {
    Command::new(par2)
        .args([verb, "-q", "-B", "."])
        .arg(index)
        .current_dir(set)
        .output()
        .unwrap()
}

fn index_of(set: &Path) -> String {
    format!("{}.par2", name_of(set))
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn every_set_verifies_with_independent_tools() {
    let env = Env::new();
    let (sets, _) = chain(&env);
    for set in &sets {
        sha256sum_check(set);
        let out = par2_cmd("/usr/bin/par2", set, "verify", &index_of(set));
        assert_eq!(
            out.status.code(),
            Some(0),
            "Debian par2 verify of {}: {}",
            set.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        let out = Command::new(set.join("bundle/dar_static"))
            .args(["-Q", "-N", "-t"])
            .arg(name_of(set))
            .current_dir(set)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bundle/dar_static -t {}",
            set.display()
        );
        let manifest = fs::read_to_string(set.join("MANIFEST.toml")).unwrap();
        assert!(manifest.contains("par2 = \"par2cmdline-turbo 1.4.0\""));
        // Nothing in a manifest points outside its set. The one absolute path is the
        // folder that was backed up, recorded as information in [definition].
        let source = format!("source = {:?}", env.path("src").display().to_string());
        assert!(
            manifest.contains(&source),
            "the definition as used: {manifest}"
        );
        let without_source = manifest.replace(&source, "");
        assert!(
            !without_source.contains(&env.tmp.path().display().to_string()),
            "no absolute path in a manifest"
        );
        assert!(
            without_source.lines().all(|l| !l.contains("= \"/")),
            "no absolute path in a manifest"
        );
        for listed in [
            "bundle/dar_static",
            "bundle/par2",
            "bundle/RESTORE.txt",
            ".catalog.1.dar",
            ".1.dar",
        ] {
            assert!(manifest.contains(listed), "{listed} listed in the manifest");
        }
    }
    // The bundle's binaries are stored once and hard-linked into each set.
    let links = fs::metadata(sets[0].join("bundle/dar_static"))
        .unwrap()
        .nlink();
    assert!(
        links > sets.len() as u64,
        "dar_static hard-linked across sets ({links} links)"
    );
}

#[test]
fn par2_repairs_flipped_bytes_and_a_lost_slice_but_not_more_than_it_can() {
    let env = Env::new();
    let (sets, _) = chain(&env);
    let full = &sets[0];
    let slices: Vec<PathBuf> = (1..)
        .map(|n| full.join(format!("{}.{n}.dar", name_of(full))))
        .take_while(|p| p.exists())
        .collect();
    assert!(
        slices.len() >= 2,
        "the FULL must be a multi-slice set for this test"
    );

    // Flipped bytes in one slice: repaired byte-identical.
    let work = env.path("flip");
    copy_dir(full, &work);
    let victim = work.join(name_of(&slices[0]));
    let original = fs::read(&victim).unwrap();
    let mut damaged = original.clone();
    for b in &mut damaged[1000..1100] {
        *b ^= 0xff;
    }
    fs::write(&victim, &damaged).unwrap();
    assert_eq!(
        par2_cmd("/usr/bin/par2", &work, "verify", &index_of(full))
            .status
            .code(),
        Some(1),
        "repairable"
    );
    assert_eq!(
        par2_cmd("par2", &work, "repair", &index_of(full))
            .status
            .code(),
        Some(0)
    );
    assert_eq!(fs::read(&victim).unwrap(), original);

    // A whole slice deleted from a small multi-slice set: repairable.
    let work = env.path("lost");
    copy_dir(full, &work);
    let lost = work.join(name_of(&slices[1]));
    let original = fs::read(&lost).unwrap();
    fs::remove_file(&lost).unwrap();
    assert_eq!(
        par2_cmd("par2", &work, "repair", &index_of(full))
            .status
            .code(),
        Some(0)
    );
    assert_eq!(fs::read(&lost).unwrap(), original);

    // Beyond the redundancy: par2 says so, and nothing pretends otherwise.
    let work = env.path("beyond");
    copy_dir(full, &work);
    for s in &slices {
        fs::remove_file(work.join(name_of(s))).unwrap();
    }
    let out = par2_cmd("par2", &work, "repair", &index_of(full));
    assert_eq!(out.status.code(), Some(2), "not repairable");
}

/// A root that holds nothing but busybox (Debian busybox-static) and /dev/tty.
fn busybox_root(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static (scripts/setup --test)");
    let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(applets.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    fs::create_dir_all(root.join("dev")).unwrap();
    for (name, major, minor) in [("tty", "5", "0"), ("null", "1", "3")] {
        let made = Command::new("mknod")
            .args(["-m", "666"])
            .arg(root.join("dev").join(name))
            .args(["c", major, minor])
            .status()
            .unwrap();
        assert!(
            made.success(),
            "mknod /dev/{name} in the rescue root (the tests run as root)"
        );
    }
}

/// Pseudo-terminals inside the rescue root (a machine has them; a bare chroot does not),
/// unmounted when dropped.
struct Devpts(PathBuf);

impl Devpts {
    fn mount(root: &Path) -> Devpts {
        let pts = root.join("dev/pts");
        fs::create_dir_all(&pts).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts"])
            .arg(&pts)
            .status()
            .unwrap();
        assert!(
            mounted.success(),
            "mount devpts in the rescue root (the tests run as root)"
        );
        std::os::unix::fs::symlink("pts/ptmx", root.join("dev/ptmx")).unwrap();
        Devpts(pts)
    }
}

impl Drop for Devpts {
    fn drop(&mut self) {
        // Lazily: a process still holding a terminal must not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The static darvault that scripts/test builds (scripts/build-static).
fn static_darvault() -> PathBuf {
    let path = std::env::var_os("DARVAULT_STATIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/x86_64-unknown-linux-musl/debug/darvault")
        });
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-static (scripts/test does)",
        path.display()
    );
    path
}

#[test]
fn the_bundled_darvault_restores_the_chain_in_a_busybox_chroot() {
    let env = Env::new();
    let darvault_static = static_darvault();
    let (sets, state) = chain_with(
        &env,
        &format!(
            "[tools]\ndarvault_static = {:?}\n\n",
            darvault_static.display().to_string()
        ),
    );
    let newest = sets.last().unwrap();
    let manifest = fs::read_to_string(newest.join("MANIFEST.toml")).unwrap();
    assert!(
        manifest.contains("bundle/darvault"),
        "the bundle carries darvault"
    );

    let root = env.path("rescue");
    busybox_root(&root);
    let _pts = Devpts::mount(&root);
    fs::create_dir_all(root.join("disk")).unwrap();
    copy_dir(&env.repo().join("docs"), &root.join("disk/docs"));

    // RESTORE.txt's one-command restore, run from inside the newest set.
    let text = fs::read_to_string(newest.join("bundle/RESTORE.txt")).unwrap();
    let command = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("bundle/darvault restore") && !l.ends_with('\\'))
        .expect("RESTORE.txt shows the darvault restore command")
        .replace("/path/to/target", "/restored");
    let script = format!(
        "set -e\ncd /disk/docs/{}\n{command}\necho RESTORED\n",
        name_of(newest)
    );
    fs::write(root.join("restore.sh"), script).unwrap();
    let out = Command::new("/usr/bin/env")
        .args(["-i", "/usr/sbin/chroot"])
        .arg(&root)
        .args(["/bin/sh", "/restore.sh"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).contains("RESTORED"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_same_tree(&state, &snapshot(&root.join("restored")));
}

#[test]
fn a_busybox_chroot_restores_the_chain_by_following_restore_txt() {
    let env = Env::new();
    let (sets, state) = chain(&env);
    // The rescue machine: busybox, the disk with the sets, nothing else (no dar, no gpg).
    let root = env.path("rescue");
    busybox_root(&root);
    copy_dir(&env.repo().join("docs"), &root.join("disk"));
    let newest = name_of(sets.last().unwrap());

    // RESTORE.txt, followed by script: step 1 (check), 3 (test), 4 (restore the chain).
    let text = fs::read_to_string(sets.last().unwrap().join("bundle/RESTORE.txt")).unwrap();
    let step = |prefix: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| l.starts_with(prefix) && !l.contains(" -g "))
            .map(|l| l.replace("/path/to/target", "/restored"))
            .collect()
    };
    let cd = step("cd ");
    let runnable = step("chmod +x bundle/");
    let check = step("for s in ");
    let test = step("bundle/dar_static -t");
    let restore = step("bundle/dar_static -x");
    assert_eq!(
        (
            cd.len(),
            runnable.len(),
            check.len(),
            test.len(),
            restore.len()
        ),
        (1, 1, 1, 1, sets.len()),
        "RESTORE.txt's commands:\n{text}"
    );
    // Copies lose modes: the chroot's tools start without the executable mark.
    for set in &sets {
        for tool in ["dar_static", "par2"] {
            let p = root
                .join("disk")
                .join(name_of(set))
                .join("bundle")
                .join(tool);
            if p.exists() {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
    }
    let script = format!(
        "set -e\n{}\n{}\n{} | tee /check.txt\n{}\nmkdir /restored\n{}\necho RESTORED\n",
        cd[0].replace("/path/to/docs", "/disk"),
        runnable[0],
        check[0],
        test[0],
        restore.join("\n")
    );
    assert!(
        script.contains(&format!("cd \"/disk/{newest}\"")),
        "{script}"
    );
    fs::write(root.join("restore.sh"), script).unwrap();
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/answer-gpgme.py"))
        .args(["/usr/bin/env", "-i", "/usr/sbin/chroot"])
        .arg(&root)
        .args(["/bin/sh", "/restore.sh"])
        .output()
        .unwrap();
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && terminal.contains("RESTORED"),
        "{terminal}"
    );
    assert_same_tree(&state, &snapshot(&root.join("restored")));
    let checked = fs::read_to_string(root.join("check.txt")).unwrap();
    for set in &sets {
        assert!(
            checked.contains(&format!("{}: OK", name_of(set))),
            "step 1 checks every set of the chain: {checked}"
        );
    }
}

#[test]
fn debian_par2_works_as_a_slower_fallback() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    config(&env, "[tools]\npar2 = \"/usr/bin/par2\"\n\n");
    let out = env.run(&["backup", "--full"]);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("par2cmdline-turbo"),
        "a warning points to the faster engine"
    );
    let set = &env.sets("docs")[0];
    let manifest = fs::read_to_string(set.join("MANIFEST.toml")).unwrap();
    assert!(
        manifest.contains("par2 = \"par2cmdline 0.8.1\""),
        "{manifest}"
    );
    assert!(
        !set.join("bundle/par2").exists(),
        "only a static par2 goes into the bundle"
    );
    assert!(
        fs::read_to_string(set.join("bundle/RESTORE.txt"))
            .unwrap()
            .contains("apt-get install par2")
    );
    sha256sum_check(set);
}
