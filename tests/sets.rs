//! Self-proving sets: PAR2, MANIFEST.toml, SHA256SUMS and the bundle, checked with tools we
//! did not write (sha256sum, Debian's par2 0.8.1, the bundled dar_static).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// This machine's architecture, as `uname -m` prints it and the bundle names its folder.
const ARCH: &str = std::env::consts::ARCH;

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
        // The chain's tools are in its FULL's bundle.
        let out = Command::new(sets[0].join(format!("bundle/{ARCH}/dar_static")))
            .args(["-Q", "-N", "-t"])
            .arg(name_of(set))
            .current_dir(set)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bundle/{ARCH}/dar_static -t {}",
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
        let tools = [
            format!("bundle/{ARCH}/dar_static"),
            format!("bundle/{ARCH}/par2"),
            "bundle/gpg-stand-in".to_owned(),
        ];
        for listed in ["bundle/RESTORE.txt", ".catalog.1.dar", ".1.dar"] {
            assert!(manifest.contains(listed), "{listed} listed in the manifest");
        }
        for tool in tools {
            assert_eq!(
                manifest.contains(&tool),
                set == &sets[0],
                "{tool}: carried by the FULL only"
            );
        }
    }
    // The bundle's binaries are stored once in the repository and hard-linked into the FULL.
    let links = fs::metadata(sets[0].join(format!("bundle/{ARCH}/dar_static")))
        .unwrap()
        .nlink();
    assert!(links >= 2, "dar_static hard-linked ({links} links)");
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

/// The machine a rescue root emulates.
#[derive(Clone, Copy, PartialEq)]
enum Machine {
    /// This machine's own architecture.
    This,
    /// An arm64 machine, run through qemu-user (binfmt_misc) on an x86_64 one.
    Arm64,
}

/// The busybox a rescue root of `machine` holds: this machine's (Debian busybox-static), or
/// Debian's arm64 busybox-static that scripts/bundle-tools --rescue-busybox unpacks. None
/// (said loudly) where arm64 programs cannot run here; in CI that fails instead.
fn rescue_busybox(machine: Machine) -> Option<PathBuf> {
    if machine == Machine::This {
        return Some(PathBuf::from("/bin/busybox"));
    }
    let busybox = std::env::var_os("DARVAULT_RESCUE_BUSYBOX_AARCH64")
        .map(PathBuf::from)
        .or_else(|| {
            let debs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bundle-tools-work/debs");
            fs::read_dir(debs)
                .ok()?
                .flatten()
                .map(|e| e.path().join("bin/busybox"))
                .find(|p| p.is_file())
        })
        .expect("an arm64 busybox: run scripts/bundle-tools --rescue-busybox (scripts/test does)");
    let runs = Command::new(&busybox)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return Some(busybox);
    }
    let why = "SKIPPED: arm64 programs do not run on this machine (binfmt_misc with qemu-aarch64 is \
               needed: apt-get install qemu-user-static binfmt-support; \
               mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("\n*** {why} ***\n");
    None
}

/// A rescue machine: a root that holds nothing but busybox (Debian busybox-static) and
/// /dev/null. No terminal (no /dev/tty, no pseudo-terminals), no dar, no gpg, no par2.
fn busybox_root(root: &Path, busybox: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(busybox, bin.join("busybox")).expect("busybox-static (scripts/setup --test)");
    // This machine's busybox names the applets: the arm64 one is the same Debian version.
    let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(applets.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    fs::create_dir_all(root.join("dev")).unwrap();
    let made = Command::new("mknod")
        .args(["-m", "666"])
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(
        made.success(),
        "mknod /dev/null in the rescue root (the tests run as root)"
    );
}

/// Run `script` with the rescue root's shell: an empty environment, no terminal, stdin
/// /dev/null, a session of its own. Returns what it printed (stdout and stderr).
fn in_rescue_root(root: &Path, script: &str) -> (bool, String) {
    fs::write(root.join("restore.sh"), script).unwrap();
    let out = Command::new("/usr/bin/setsid")
        .args(["/usr/bin/env", "-i", "/usr/sbin/chroot"])
        .arg(root)
        .args(["/bin/sh", "/restore.sh"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}\n{}", stdout(&out), stderr(&out)),
    )
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

/// The commands of one step of a RESTORE.txt (`0`, `1`, … ; `intro` for the lines before
/// step 0): its lines indented by exactly four spaces, continuation lines joined, with the
/// example paths made real (`/path/to` → `/disk`, the target → `/restored`).
fn restore_step(text: &str, step: &str) -> Vec<String> {
    let mut current = "intro".to_owned();
    let mut commands: Vec<String> = Vec::new();
    let mut continued = false;
    for line in text.lines() {
        if let Some((number, _)) = line.split_once(". ")
            && !number.is_empty()
            && number.chars().all(|c| c.is_ascii_digit())
        {
            current = number.to_owned();
            continue;
        }
        if current != step {
            continue;
        }
        // Numbered lists inside a step (the chain's sets) are not commands.
        let listed = line
            .trim()
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        let is_command = line.starts_with("    ") && !line.starts_with("     ") && !listed;
        if continued {
            let last = commands.last_mut().unwrap();
            last.pop();
            last.push_str(line.trim());
        } else if is_command {
            commands.push(line.trim().to_owned());
        } else {
            continue;
        }
        continued = line.ends_with('\\');
    }
    commands
        .into_iter()
        .map(|c| {
            c.replace("/path/to/target", "/restored")
                .replace("/path/to", "/disk")
        })
        .collect()
}

/// Where a chain's copy comes from before it reaches the rescue machine.
enum Carried {
    /// `replicate` to an fs destination: the disk carried to the rescue machine.
    UsbDisk,
    /// `replicate` to S3, then downloaded by rclone (which keeps no file modes).
    S3Download,
}

/// The folder of the other machines' tools that scripts/bundle-tools makes.
fn bundle_tools() -> PathBuf {
    let path = std::env::var_os("DARVAULT_BUNDLE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bundle-tools"));
    assert!(
        path.join("aarch64/darvault").is_file(),
        "{} has no aarch64 tools: run scripts/bundle-tools (scripts/test does)",
        path.display()
    );
    path
}

/// A FULL+DIFF+INCR chain (with a static darvault in the FULL's bundle, and the tools for
/// both machines when the rescue machine is arm64) replicated as `carried`, now at
/// `<rescue root>/disk/docs/`; one slice of the DIFF damaged there. Returns the sets' names
/// and the source's final state.
fn rescue_copy(
    env: &Env,
    root: &Path,
    carried: Carried,
    machine: Machine,
) -> (Vec<String>, std::collections::BTreeMap<String, Node>) {
    let disk = root.join("disk");
    let destination = match carried {
        Carried::UsbDisk => format!(
            "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n\n",
            disk.display().to_string()
        ),
        Carried::S3Download => destination("s3", "rescue", "").0 + "\n",
    };
    let both = match machine {
        Machine::This => String::new(),
        Machine::Arm64 => format!(
            "bundle_architectures = [\"x86_64\", \"aarch64\"]\nbundle_tools = {:?}\n",
            bundle_tools().display().to_string()
        ),
    };
    let tools = format!(
        "[tools]\ndarvault_static = {:?}\n{both}\n",
        static_darvault().display().to_string()
    );
    let (sets, state) = chain_with(env, &format!("{tools}{destination}"));
    let out = env.run(&["replicate"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    if let Carried::S3Download = carried {
        download_s3(&format!("rescue-{}", std::process::id()), &disk);
    }
    let names: Vec<String> = sets.iter().map(|s| name_of(s)).collect();
    let diff = disk.join("docs").join(&names[1]);
    let slice = diff.join(format!("{}.1.dar", names[1]));
    let mut bytes = fs::read(&slice).unwrap();
    for b in &mut bytes[100..164] {
        *b ^= 0xff;
    }
    fs::write(&slice, bytes).unwrap();
    (names, state)
}

/// What the rescue root's shell said `uname -m` was, and that the tools step 0 made ready
/// are programs of that machine (ELF e_machine 62: x86_64, 183: aarch64).
fn assert_ran_as(root: &Path, machine: Machine) {
    let (expected, e_machine) = match machine {
        Machine::This => (ARCH, if ARCH == "x86_64" { 62 } else { 183 }),
        Machine::Arm64 => ("aarch64", 183),
    };
    let seen = fs::read_to_string(root.join("machine.txt")).unwrap();
    assert_eq!(seen.trim(), expected, "the rescue machine's uname -m");
    let dar = fs::read(root.join("tmp/restore-tools/dar_static")).unwrap();
    assert_eq!(
        u16::from_le_bytes([dar[18], dar[19]]),
        e_machine,
        "step 0 made this machine's dar_static ready"
    );
}

/// Follow the newest set's RESTORE.txt word for word on the rescue machine: get the tools
/// ready, check the chain (the DIFF is damaged), repair the DIFF with the steps of its own
/// RESTORE.txt, check again, test, restore the chain.
fn follow_restore_txt(carried: Carried, machine: Machine) {
    let Some(busybox) = rescue_busybox(machine) else {
        return;
    };
    let env = Env::new();
    let root = env.path("rescue");
    busybox_root(&root, &busybox);
    let (sets, state) = rescue_copy(&env, &root, carried, machine);
    let set_dir = |name: &str| root.join("disk/docs").join(name);
    let newest = sets.last().unwrap();
    let text = fs::read_to_string(set_dir(newest).join("bundle/RESTORE.txt")).unwrap();
    let diff_text = fs::read_to_string(set_dir(&sets[1]).join("bundle/RESTORE.txt")).unwrap();
    let intro = restore_step(&text, "intro");
    let ready = restore_step(&text, "0");
    let check = restore_step(&text, "1");
    let repair = restore_step(&diff_text, "2");
    let test = restore_step(&text, "3");
    let restore = restore_step(&text, "4");
    assert_eq!(
        (intro.len(), check.len(), test.len(), restore.len()),
        (1, 1, 1, sets.len()),
        "RESTORE.txt's commands:\n{text}"
    );
    assert!(
        !ready.is_empty() && !repair.is_empty(),
        "{text}\n{diff_text}"
    );
    let script = [
        vec!["set -e".to_owned(), "uname -m > /machine.txt".to_owned()],
        intro.clone(),
        ready,
        vec![format!("{} | tee /check-before.txt", check[0])],
        vec![format!("cd ../{}", sets[1])],
        repair,
        vec![format!("cd ../{newest}")],
        vec![format!("{} | tee /check-after.txt", check[0])],
        test,
        vec!["mkdir /restored".to_owned()],
        restore,
        vec!["echo RESTORED".to_owned()],
    ]
    .concat()
    .join("\n");
    assert!(
        script.contains(&format!("cd \"/disk/docs/{newest}\"")),
        "{script}"
    );
    let (ok, printed) = in_rescue_root(&root, &script);
    assert!(
        ok && printed.contains("RESTORED"),
        "{script}\n---\n{printed}"
    );
    let before = fs::read_to_string(root.join("check-before.txt")).unwrap();
    let after = fs::read_to_string(root.join("check-after.txt")).unwrap();
    assert!(
        before.contains(&format!("{}: DAMAGED", sets[1])),
        "step 1 finds the damaged DIFF: {before}"
    );
    for set in &sets {
        assert!(
            after.contains(&format!("{set}: OK")),
            "after step 2 every set of the chain checks: {after}"
        );
    }
    assert_ran_as(&root, machine);
    assert_same_tree(&state, &snapshot(&root.join("restored")));
}

#[test]
fn a_rescue_machine_restores_a_usb_copy_by_following_restore_txt() {
    follow_restore_txt(Carried::UsbDisk, Machine::This);
}

#[test]
fn a_rescue_machine_restores_an_s3_download_by_following_restore_txt() {
    follow_restore_txt(Carried::S3Download, Machine::This);
}

#[test]
fn an_arm64_rescue_machine_restores_a_usb_copy_by_following_restore_txt() {
    follow_restore_txt(Carried::UsbDisk, Machine::Arm64);
}

#[test]
fn the_bundled_darvault_repairs_and_restores_the_chain_on_a_rescue_machine() {
    bundled_darvault_restores(Carried::S3Download, Machine::This);
}

#[test]
fn the_bundled_arm64_darvault_repairs_and_restores_the_chain_on_an_arm64_rescue_machine() {
    bundled_darvault_restores(Carried::UsbDisk, Machine::Arm64);
}

fn bundled_darvault_restores(carried: Carried, machine: Machine) {
    let Some(busybox) = rescue_busybox(machine) else {
        return;
    };
    let env = Env::new();
    let root = env.path("rescue");
    busybox_root(&root, &busybox);
    let (sets, state) = rescue_copy(&env, &root, carried, machine);
    let newest = sets.last().unwrap();
    let text = fs::read_to_string(
        root.join("disk/docs")
            .join(newest)
            .join("bundle/RESTORE.txt"),
    )
    .unwrap();
    let darvault = restore_step(&text, "6");
    let repair = darvault
        .iter()
        .find(|c| c.contains("darvault audit"))
        .expect("RESTORE.txt shows the darvault audit command");
    let restore = darvault
        .iter()
        .find(|c| c.contains("darvault restore") && !c.contains("--as-of"))
        .expect("RESTORE.txt shows the darvault restore command");
    let script = [
        vec!["set -e".to_owned(), "uname -m > /machine.txt".to_owned()],
        restore_step(&text, "intro"),
        restore_step(&text, "0"),
        vec![repair.clone(), restore.clone(), "echo RESTORED".to_owned()],
    ]
    .concat()
    .join("\n");
    let (ok, printed) = in_rescue_root(&root, &script);
    assert!(
        ok && printed.contains("RESTORED"),
        "{script}\n---\n{printed}"
    );
    assert!(
        printed.contains("repaired"),
        "the damaged DIFF was repaired: {printed}"
    );
    assert_ran_as(&root, machine);
    assert_same_tree(&state, &snapshot(&root.join("restored")));
}

#[test]
fn the_tools_are_carried_once_per_chain_and_a_small_incr_costs_kilobytes() {
    let env = Env::new();
    let usb = env.path("usb");
    let (sets, _) = chain_with(
        &env,
        &format!(
            "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n\n",
            usb.display().to_string()
        ),
    );
    assert_eq!(code(&env.run(&["replicate"])), 0);
    let bundle_of = |set: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(set.join("bundle"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let on_usb = |set: &Path| usb.join("docs").join(name_of(set));
    assert!(
        bundle_of(&on_usb(&sets[0])).contains(&ARCH.to_owned())
            && on_usb(&sets[0])
                .join(format!("bundle/{ARCH}/dar_static"))
                .is_file()
            && bundle_of(&on_usb(&sets[0])).contains(&"gpg-stand-in".to_owned()),
        "the FULL carries the tools: {:?}",
        bundle_of(&on_usb(&sets[0]))
    );
    for later in &sets[1..] {
        assert_eq!(bundle_of(&on_usb(later)), vec!["RESTORE.txt"]);
        sha256sum_check(&on_usb(later));
    }
    let incr = on_usb(sets.last().unwrap());
    let bytes: u64 = walkdir::WalkDir::new(&incr)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes < 1 << 20, "the INCR takes {bytes} bytes on the copy");
    let mode = fs::metadata(on_usb(&sets[0]).join("bundle/gpg-stand-in"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the stand-in is runnable on the copy");
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
        !set.join(format!("bundle/{ARCH}/par2")).exists()
            && set.join(format!("bundle/{ARCH}/dar_static")).exists(),
        "only a static par2 goes into the bundle"
    );
    assert!(
        fs::read_to_string(set.join("bundle/RESTORE.txt"))
            .unwrap()
            .contains("apt-get install par2")
    );
    sha256sum_check(set);
}

/// A chain whose FULL was made with other tools (here: before the gpg stand-in existed): the
/// next set carries today's tools itself, and the sets after it point to that one.
#[test]
fn a_set_made_after_the_tools_changed_carries_them_for_its_chain() {
    let env = Env::new();
    let src = env.path("src");
    awkward_tree(&src);
    config(&env, "");
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let full = env.sets("docs")[0].clone();
    let mut manifest = darvault::set::Manifest::read(&full).unwrap();
    manifest.files.retain(|f| f.path != "bundle/gpg-stand-in");
    fs::remove_file(full.join("bundle/gpg-stand-in")).unwrap();
    manifest.write(&full).unwrap();
    sha256sum_check(&full);

    write(&src.join("plain.txt"), b"changed once\n");
    assert_eq!(code(&env.run(&["backup", "--diff"])), 0);
    write(&src.join("plain.txt"), b"changed twice\n");
    assert_eq!(code(&env.run(&["backup", "--incr"])), 0);
    let sets = env.sets("docs");
    let (diff, incr) = (&sets[1], &sets[2]);
    for tool in [
        format!("bundle/{ARCH}/dar_static"),
        "bundle/gpg-stand-in".to_owned(),
    ] {
        assert!(diff.join(&tool).is_file(), "the DIFF carries {tool}");
        assert!(
            !incr.join(&tool).exists(),
            "the INCR points to the DIFF's {tool}"
        );
    }
    let diff_text = fs::read_to_string(diff.join("bundle/RESTORE.txt")).unwrap();
    assert!(
        diff_text.contains("cp bundle/$(uname -m)/*"),
        "the DIFF's own tools: {diff_text}"
    );
    let incr_text = fs::read_to_string(incr.join("bundle/RESTORE.txt")).unwrap();
    assert!(
        incr_text.contains(&format!("cp ../{}/bundle/$(uname -m)/*", name_of(diff))),
        "{incr_text}"
    );
}

#[test]
fn a_set_carrying_this_machines_changed_tools_keeps_the_other_machines_tools_of_its_chain() {
    let env = Env::new();
    let src = env.path("src");
    awkward_tree(&src);
    let tools = |darvault: &Path, folder: &Path| {
        format!(
            "[tools]\ndarvault_static = {:?}\nbundle_tools = {:?}\n\n",
            darvault.display().to_string(),
            folder.display().to_string()
        )
    };
    config(&env, &tools(&static_darvault(), &bundle_tools()));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let full = env.sets("docs")[0].clone();
    // A newer darvault for this machine; the other machine's tools not found any more.
    let newer = env.path("newer/darvault");
    fs::create_dir_all(newer.parent().unwrap()).unwrap();
    let mut bytes = fs::read(static_darvault()).unwrap();
    bytes.extend_from_slice(b"\0a newer build");
    write(&newer, &bytes);
    fs::set_permissions(&newer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let nothing = env.path("no-tools");
    fs::create_dir_all(&nothing).unwrap();
    config(&env, &tools(&newer, &nothing));
    write(&src.join("plain.txt"), b"changed once\n");
    let out = env.run(&["backup", "--diff", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let carried = &report["definitions"][0]["tools"];
    assert_eq!(
        carried["kept_from_older_set"][0]["architecture"], "aarch64",
        "{carried}"
    );
    assert_eq!(carried["kept_from_older_set"][0]["reason"], "not_found");
    assert_eq!(carried["left_out"], serde_json::json!([]), "{carried}");

    let diff = env.sets("docs")[1].clone();
    assert_eq!(fs::read(diff.join(bundled("darvault"))).unwrap(), bytes);
    for program in ["dar_static", "par2", "darvault"] {
        let path = format!("bundle/aarch64/{program}");
        assert_eq!(
            fs::read(diff.join(&path)).unwrap(),
            fs::read(full.join(&path)).unwrap(),
            "the DIFF carries the FULL's {path}"
        );
    }
    sha256sum_check(&diff);
    let text = fs::read_to_string(diff.join("bundle/RESTORE.txt")).unwrap();
    assert!(text.contains("aarch64 (arm64)"), "{text}");
    assert!(text.contains("cp bundle/$(uname -m)/*"), "{text}");
}
