//! darvault in an interactive terminal: every command that runs dar, as the foreground job of
//! a pseudo-terminal (as a shell starts it), finishes; Ctrl-C ends a backup within 2 s with
//! exit 130, nothing published and no child left behind.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A pseudo-terminal whose slave is the controlling terminal of the command started on it,
/// which becomes its foreground process group.
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(mut command: Command) -> OnTerminal {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty fills in two new descriptors.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: both were just opened and belong to nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        command
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave));
        // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the slave here.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop(command);
        drop(slave);
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every holder of the slave is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal {
            child,
            master,
            output,
        }
    }

    /// Type Ctrl-C: the terminal sends SIGINT to its foreground process group.
    fn interrupt(&mut self) {
        self.master.write_all(b"\x03").unwrap();
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// The exit code, or a failed test naming what hung (the session is killed).
    fn wait(&mut self, limit: Duration) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if started.elapsed() > limit {
                let stuck = processes_mentioning("darvault-test.");
                // SAFETY: the child leads its own session and group.
                unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
                let _ = self.child.wait();
                panic!(
                    "still running after {limit:?} on a terminal; processes: {stuck:?}\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn on_terminal(env: &Env, args: &[&str], limit: Duration) -> (i32, String) {
    let mut command = env.cmd();
    command.args(args).env("TERM", "xterm");
    let mut t = OnTerminal::start(command);
    let code = t.wait(limit);
    // Let the reader thread collect the last output.
    std::thread::sleep(Duration::from_millis(100));
    let output = t.output();
    eprintln!(
        "$ darvault {} (on a terminal)\n{output}\n--- exit {code}",
        args.join(" ")
    );
    (code, output)
}

fn definition(env: &Env, source: &Path) -> String {
    format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"1M\"\n\n\
         [[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n",
        source.display().to_string(),
        env.path("usb").display().to_string()
    )
}

const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn every_command_that_runs_dar_finishes_on_a_terminal() {
    let env = Env::new();
    let src = env.path("src");
    corpus(&src, 12, 4);
    env.config(&definition(&env, &src));
    let (code, out) = on_terminal(&env, &["backup", "--full"], LIMIT);
    assert_eq!(code, 0, "{out}");
    corpus_change(&src, 1);
    assert_eq!(on_terminal(&env, &["backup", "--diff"], LIMIT).0, 0);
    assert_eq!(on_terminal(&env, &["replicate"], LIMIT).0, 0);
    assert_eq!(on_terminal(&env, &["audit", "--deep"], LIMIT).0, 0);
    // The whole chain, then one file (restored flat by dar, moved into the folders
    // darvault makes), from the USB copy.
    let restore_from_usb = |target: &str, paths: &[&str]| {
        let target = env.path(target).display().to_string();
        let mut args = vec![
            "restore", "--from", "usb", "-d", "docs", "--target", &target,
        ];
        args.extend_from_slice(paths);
        on_terminal(&env, &args, LIMIT)
    };
    let (code, out) = restore_from_usb("restored", &[]);
    assert_eq!(code, 0, "{out}");
    let one = walkdir::WalkDir::new(&src)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file() && e.depth() > 1)
        .expect("a file in a folder");
    let path = one.path().strip_prefix(&src).unwrap().display().to_string();
    let single = env.path("restored-one");
    let (code, out) = restore_from_usb("restored-one", &[&path]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read(single.join(&path)).unwrap() == std::fs::read(one.path()).unwrap());
    let (code, out) = on_terminal(&env, &["drill", "usb"], LIMIT);
    assert_eq!(code, 0, "{out}");
    let (code, out) = on_terminal(&env, &["cleanup", "--dry-run"], LIMIT);
    assert_eq!(code, 0, "{out}");
    let demo = env.path("demo");
    let (code, out) = on_terminal(&env, &["demo", "--dir", &demo.display().to_string()], LIMIT);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn ctrl_c_ends_a_backup_within_two_seconds() {
    let env = Env::new();
    let src = env.path("src");
    // Large enough that dar is still writing when Ctrl-C comes.
    let mut rng = fastrand::Rng::with_seed(5);
    let mut video = vec![0u8; 1 << 20];
    let mut file = std::fs::File::create({
        std::fs::create_dir_all(&src).unwrap();
        src.join("long video.m2ts")
    })
    .unwrap();
    for _ in 0..600 {
        rng.fill(&mut video);
        file.write_all(&video).unwrap();
    }
    drop(file);
    env.config(&definition(&env, &src));
    let mut command = env.cmd();
    command.args(["backup", "--full"]).env("TERM", "xterm");
    let mut t = OnTerminal::start(command);
    // Wait until dar has written a few slices.
    let definition_dir = env.repo().join("docs");
    let started = Instant::now();
    loop {
        let slices = std::fs::read_dir(&definition_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| common::name_of(&e.path()).starts_with(".staging."))
            .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
            .filter(|e| common::name_of(&e.path()).ends_with(".dar"))
            .count();
        if slices >= 3 {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "dar never started: {}",
            t.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The bar knows how much there is to save (a quick estimate before dar starts).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.output().contains("ETA") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        t.output().contains(": dar -c [") && t.output().contains("ETA"),
        "a bar with a total: {}",
        t.output()
    );
    let interrupted = Instant::now();
    t.interrupt();
    let code = t.wait(Duration::from_secs(20));
    let took = interrupted.elapsed();
    eprintln!("{}", t.output());
    assert_eq!(code, 130, "exit code after Ctrl-C");
    assert!(took < Duration::from_secs(2), "Ctrl-C took {took:?}");
    assert!(env.sets("docs").is_empty(), "nothing published");
    // No child outlives darvault (each runs in a session of its own, so look for them all).
    let tag = env.tmp.path().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes_mentioning(&tag).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_mentioning(&tag), vec![], "children left behind");
}

/// A stand-in for `tool` that runs the real one, except for the command `when` names (a
/// shell test on its arguments): then it marks `mark` and waits, as a long extraction or
/// repair would; darvault must end it.
fn slow_tool(env: &Env, tool: &str, when: &str, mark: &Path) -> PathBuf {
    let real = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    let real = String::from_utf8(real.stdout).unwrap();
    let script = env.path(&format!("slow-{tool}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif {when}; then\n  : > {mark:?}\n  sleep {WAITING}\n  exit 0\nfi\nexec {} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// How long a slow tool waits: a number no other process of the machine has in its command
/// line.
const WAITING: &str = "3599.25";

/// Start `args` on a terminal, wait until the slow tool marked `mark` (the chosen point:
/// the child is running), type Ctrl-C: exit 130 within 2 s, and the child is gone.
fn ctrl_c_while_a_child_runs(env: &Env, args: &[&str], mark: &Path) {
    let mut command = env.cmd();
    command.args(args).env("TERM", "xterm");
    let mut t = OnTerminal::start(command);
    let started = Instant::now();
    while !mark.exists() {
        assert!(
            started.elapsed() < LIMIT,
            "{args:?}: the tool never started: {}",
            t.output()
        );
        if let Some(status) = t.child.try_wait().unwrap() {
            panic!(
                "{args:?} ended ({status}) before its tool ran: {}",
                t.output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let interrupted = Instant::now();
    t.interrupt();
    let code = t.wait(Duration::from_secs(20));
    let took = interrupted.elapsed();
    assert_eq!(code, 130, "{args:?}: {}", t.output());
    assert!(
        took < Duration::from_secs(2),
        "{args:?}: Ctrl-C took {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes_mentioning(WAITING).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        processes_mentioning(WAITING),
        vec![],
        "{args:?}: child left"
    );
}

/// One way to stop, whatever is running: Ctrl-C while a restore's dar extracts, and while a
/// repair's par2 repairs, ends darvault with exit 130 within 2 s and no child left; the
/// repair interrupted left the copy as it was, and the next one repairs it.
#[test]
fn ctrl_c_ends_a_restore_and_a_repair_while_their_tool_runs() {
    let env = Env::new();
    let src = env.path("src");
    corpus(&src, 12, 4);
    let setup = definition(&env, &src);
    env.config(&setup);
    assert_eq!(on_terminal(&env, &["backup", "--full"], LIMIT).0, 0);
    assert_eq!(on_terminal(&env, &["replicate"], LIMIT).0, 0);

    let extracting = env.path("dar-extracting");
    let dar = slow_tool(
        &env,
        "dar",
        "case \" $* \" in *\" -x \"*) true ;; *) false ;; esac",
        &extracting,
    );
    let repairing = env.path("par2-repairing");
    let par2 = slow_tool(&env, "par2", "[ \"$1\" = repair ]", &repairing);
    env.config(&format!(
        "[tools]\ndar = {:?}\npar2 = {:?}\n\n{setup}",
        dar.display().to_string(),
        par2.display().to_string()
    ));
    let target = env.path("restored").display().to_string();
    ctrl_c_while_a_child_runs(
        &env,
        &[
            "restore", "--from", "usb", "-d", "docs", "--target", &target,
        ],
        &extracting,
    );

    // A slice of the USB copy damaged; no other copy holds the set: par2 repairs it.
    let set = env.sets("docs").pop().expect("a set");
    let set_name = common::name_of(&set);
    let slice = env
        .path("usb")
        .join("docs")
        .join(&set_name)
        .join(format!("{set_name}.1.dar"));
    let mut bytes = std::fs::read(&slice).unwrap();
    for b in bytes.iter_mut().skip(4096).take(64) {
        *b ^= 0x5a;
    }
    std::fs::write(&slice, &bytes).unwrap();
    std::fs::rename(env.repo().join("docs"), env.path("repository-away")).unwrap();
    ctrl_c_while_a_child_runs(&env, &["audit", "usb", "--repair"], &repairing);
    assert_eq!(std::fs::read(&slice).unwrap(), bytes, "the copy as it was");
    env.config(&setup);
    let (code, out) = on_terminal(&env, &["audit", "usb", "--repair"], LIMIT);
    assert_eq!(code, 0, "{out}");
}
