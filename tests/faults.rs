//! Copies that fail under us, for real: a USB disk (a loop-mounted ext4) unmounted mid-run, a
//! full disk (tmpfs with size=), servers that stop answering (SIGSTOP of a WebDAV and an SSH
//! server of the test's own, a frozen connection to S3), a closed port. Each fails within
//! seconds with its cause named, leaves nothing that looks complete, and writes nothing
//! outside the copy. And a restore onto a disk that cannot hold everything (exFAT, through
//! FUSE on a loop device) names each file it could not write.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A source of `mib` MiB of incompressible video (no compression, so dar is quick).
fn video_source(env: &Env, mib: usize) {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = fastrand::Rng::with_seed(mib as u64);
    let mut chunk = vec![0u8; 1 << 20];
    let mut f = fs::File::create(src.join("clip.mp4")).unwrap();
    for _ in 0..mib {
        rng.fill(&mut chunk);
        f.write_all(&chunk).unwrap();
    }
}

fn configure(env: &Env, slice: &str, destinations: &str) {
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = {slice:?}\n\n{destinations}",
        env.path("src").display().to_string()
    ));
}

fn error_of(out: &std::process::Output) -> String {
    json(out)["destinations"][0]["error"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// The names in a folder.
fn names_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mount that is undone when dropped.
struct Mounted {
    point: PathBuf,
    loop_device: Option<String>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.point)
            .stderr(Stdio::null())
            .status();
        if let Some(dev) = &self.loop_device {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

/// A restore target on exFAT (mounted through FUSE on a loop device, as a USB stick is):
/// no symbolic links, no FIFOs. The files it cannot hold are named with dar's reason, the
/// others are restored, and the exit code says it was not all (1).
#[test]
fn a_restore_onto_exfat_names_each_file_it_could_not_write() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("photo.jpg"), &vec![7u8; 100_000]);
    write(&src.join("notes/today.txt"), b"kept\n");
    std::os::unix::fs::symlink("photo.jpg", src.join("latest.jpg")).unwrap();
    sh(&format!("mkfifo {}", src.join("pipe").display()));
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\n",
        src.display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);

    let stick = env.path("stick");
    let _mounted = disk_image(&env, "32M", "mkfs.exfat", "mount.exfat-fuse", &stick);
    let target = stick.join("restored");
    let out = env.run(&[
        "--json",
        "restore",
        "-d",
        "docs",
        "--target",
        &target.display().to_string(),
    ]);
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<(String, String)> = report["not_restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let named: Vec<&str> = failed.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        named.contains(&"latest.jpg") && named.contains(&"pipe"),
        "{failed:?}"
    );
    assert!(failed.iter().all(|(_, why)| !why.is_empty()), "{failed:?}");
    assert_eq!(
        fs::read(target.join("photo.jpg")).unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(fs::read(target.join("notes/today.txt")).unwrap(), b"kept\n");
    // The same on the terminal: each file with its reason.
    let out = env.run(&[
        "restore",
        "-d",
        "docs",
        "--overwrite",
        "--target",
        &target.display().to_string(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("could not be written") && stdout(&out).contains("latest.jpg: "),
        "{}",
        stdout(&out)
    );
}

/// A disk of `size` made by `mkfs` in an image file, on a loop device, mounted by `mount` at
/// `point` (as a USB disk is): unmounted and detached when dropped.
fn disk_image(env: &Env, size: &str, mkfs: &str, mount: &str, point: &Path) -> Mounted {
    let image = env.path(&format!(
        "{}.img",
        point.file_name().unwrap().to_string_lossy()
    ));
    sh(&format!(
        "truncate -s {size} {0} && {mkfs} {0} >/dev/null",
        image.display()
    ));
    let device = String::from_utf8(
        Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    fs::create_dir_all(point).unwrap();
    let mounted = Mounted {
        point: point.to_owned(),
        loop_device: Some(device.clone()),
    };
    sh(&format!("{mount} {device} {}", point.display()));
    mounted
}

/// `par2_dir` on another filesystem (a tmpfs of its own): the repository's disk damages a
/// slice of a set and every one of its PAR2 files; `audit --repair` heals the PAR2 files from
/// par2_dir, then repairs the slice with them. Cleanup removes the set's PAR2 copy with it.
#[test]
fn par2_kept_on_another_disk_repairs_a_set_whose_own_par2_is_damaged() {
    let env = Env::new();
    let src = env.path("src");
    let mut bytes = vec![0u8; 700_000];
    fastrand::Rng::with_seed(9).fill(&mut bytes);
    write(&src.join("scan.tif"), &bytes);
    write(&src.join("notes.txt"), b"notes\n");
    let other = env.path("other-disk");
    fs::create_dir_all(&other).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=32m tmpfs {}",
        other.display()
    ));
    let _mounted = Mounted {
        point: other.clone(),
        loop_device: None,
    };
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"128K\"\npar2_dir = {:?}\n",
        src.display().to_string(),
        other.display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let set = env.sets("docs")[0].clone();
    let name = name_of(&set);
    let kept = other.join("docs").join(&name);
    let manifest = darvault::set::Manifest::read(&set).unwrap();
    let par2_files: Vec<String> = manifest
        .files
        .iter()
        .filter(|f| f.role == darvault::set::Role::Par2)
        .map(|f| f.path.clone())
        .collect();
    assert!(!par2_files.is_empty());
    for f in par2_files.iter().chain([&"MANIFEST.toml".to_owned()]) {
        assert_eq!(
            fs::read(kept.join(f)).unwrap(),
            fs::read(set.join(f)).unwrap(),
            "{f} kept in par2_dir"
        );
    }
    assert_eq!(
        manifest.definition.unwrap().par2_dir,
        Some(other.display().to_string())
    );

    // The repository's disk: a damaged slice, and every PAR2 file damaged too.
    let flip = |p: &Path| {
        let mut b = fs::read(p).unwrap();
        b[50] ^= 0xff;
        fs::write(p, b).unwrap();
    };
    flip(&set.join(format!("{name}.2.dar")));
    for f in &par2_files {
        flip(&set.join(f));
    }
    let out = env.run(&["--json", "audit", "repository", "--repair"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let report = json(&out);
    let files = report["copies"][0]["sets"][0]["files"]
        .as_array()
        .unwrap()
        .clone();
    let source_of = |path: &str| {
        files
            .iter()
            .find(|f| f["path"] == path)
            .map(|f| f["repaired_from"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    assert_eq!(source_of(&format!("{name}.2.dar")), "par2", "{files:?}");
    assert!(
        source_of(&par2_files[0]).starts_with("copy par2_dir"),
        "{files:?}"
    );
    sha256sum_check(&set);

    // Retention takes the PAR2 copy with the set.
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let out = env.run(&["cleanup", "--set", &name, "--yes"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(!set.exists() && !kept.exists());
    // And when a removal was interrupted (its marker left, the manifest gone), the next
    // cleanup finishes it, PAR2 copy included.
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let second = env.sets("docs")[0].clone();
    let second_kept = other.join("docs").join(name_of(&second));
    assert!(second_kept.join("MANIFEST.toml").is_file());
    fs::write(second.join(".darvault-removing"), b"interrupted\n").unwrap();
    fs::remove_file(second.join("MANIFEST.toml")).unwrap();
    fs::remove_file(second.join("SHA256SUMS")).unwrap();
    let out = env.run(&["cleanup", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(!second.exists() && !second_kept.exists());
}

#[test]
fn a_full_disk_fails_at_once_naming_the_cause() {
    let env = Env::new();
    video_source(&env, 24);
    let usb = env.path("usb");
    fs::create_dir_all(&usb).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=8m tmpfs {}",
        usb.display()
    ));
    let _mounted = Mounted {
        point: usb.clone(),
        loop_device: None,
    };
    configure(
        &env,
        "4M",
        &format!(
            "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\nrequire_mount = true\n",
            usb.display().to_string()
        ),
    );
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let started = Instant::now();
    let out = env.run(&["--json", "replicate"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 1);
    let error = error_of(&out);
    assert!(error.contains("disk is full"), "{error}");
    assert!(!error.contains("temporary"), "{error}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Nothing on the copy looks like a set, and no empty file was left behind.
    for e in walkdir::WalkDir::new(&usb).into_iter().flatten() {
        assert_ne!(e.file_name(), "MANIFEST.toml", "a manifest on a full disk");
        if e.file_type().is_file() {
            assert!(
                e.metadata().unwrap().len() > 0,
                "empty file {}",
                e.path().display()
            );
        }
    }
}

#[test]
fn a_disk_unmounted_mid_run_stops_the_run_and_nothing_lands_under_the_mount_point() {
    let env = Env::new();
    video_source(&env, 40);
    let usb = env.path("usb");
    let mounted = disk_image(&env, "200M", "mkfs.ext4 -q -F", "mount", &usb);
    configure(
        &env,
        "4M",
        &format!(
            "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\nrequire_mount = true\nbandwidth_limit = \"8M\"\n",
            usb.join("darvault").display().to_string()
        ),
    );
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let run = env
        .cmd()
        .args(["--json", "replicate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Pull the disk once some slices are on it.
    let on_disk = |p: &Path| {
        walkdir::WalkDir::new(p)
            .into_iter()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".dar"))
            .count()
    };
    let started = Instant::now();
    while on_disk(&usb) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replicate never wrote"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sh(&format!("umount -l {}", usb.display()));
    let pulled = Instant::now();
    let out = run.wait_with_output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(pulled.elapsed() < Duration::from_secs(30));
    let error = error_of(&out);
    assert!(error.contains("no longer on the disk"), "{error}");
    // The mount point on the system disk stayed empty.
    let under = names_in(&usb);
    assert!(under.is_empty(), "written onto the system disk: {under:?}");
    drop(mounted);
}

/// A server of the test's own in a process group of its own, frozen with SIGSTOP on demand
/// and killed when dropped.
struct Server(Child);

impl Server {
    fn start(command: &mut Command, port: u16) -> Server {
        command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = Server(command.spawn().unwrap());
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn freeze(&self) {
        // SAFETY: a signal to the server's own process group.
        unsafe { libc::killpg(self.0.id() as i32, libc::SIGSTOP) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe {
            libc::killpg(self.0.id() as i32, libc::SIGKILL);
            libc::killpg(self.0.id() as i32, libc::SIGCONT);
        }
        let _ = self.0.wait();
    }
}

/// A TCP relay to `target` that can be frozen: it then stops moving bytes either way, as a
/// stopped server does.
fn freezable_relay(target: String) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&frozen);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        while flag.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                while flag.load(Ordering::Relaxed) {
                                    std::thread::sleep(Duration::from_millis(50));
                                }
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    (port, frozen)
}

/// Replicate until `some_sent` says the transfer is under way, then `freeze`: the run must
/// fail within the stall timeout (5 s here), saying nothing moved.
fn stalls_fail_in_time(
    env: &Env,
    destination: &str,
    some_sent: impl Fn() -> bool,
    freeze: impl FnOnce() -> Box<dyn std::any::Any>,
) {
    configure(env, "8M", destination);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let run = env
        .cmd()
        .env("RUST_LOG", "darvault=debug,opendal=debug")
        .args(["--json", "replicate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut run = run;
    while !some_sent() {
        if let Ok(Some(_)) = run.try_wait() {
            let out = run.wait_with_output().unwrap();
            panic!("replicate ended before sending anything: {}", stdout(&out));
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing was ever sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let frozen = freeze();
    let since = Instant::now();
    let (out, took) = said_and_ended(run, frozen);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let error = error_of(&out);
    assert!(error.contains("nothing moved"), "{error}");
    eprintln!("gave up after {took:?} ({:?} to its exit)", since.elapsed());
    // One deadline: the stall timeout counted once, not per layer, retry or file.
    assert!(
        took < Duration::from_secs(5 + 3),
        "gave up only after {took:?}"
    );
}

/// What `run` said, and how long it took to say it all (its output ended), while `frozen`
/// holds what it waits on. Then `frozen` is let go before `run` is waited for: the kernel
/// lets no process end while one of its threads is in a request a stopped FUSE daemon has
/// taken (not even on SIGKILL), so a run that has said everything may end only once the
/// daemon answers. Never waits more than a minute for either.
fn said_and_ended(
    mut run: std::process::Child,
    frozen: Box<dyn std::any::Any>,
) -> (std::process::Output, Duration) {
    use std::io::Read;
    let since = Instant::now();
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = reader(Box::new(run.stdout.take().unwrap()));
    let err = reader(Box::new(run.stderr.take().unwrap()));
    while !(out.is_finished() && err.is_finished()) {
        if since.elapsed() > Duration::from_secs(60) {
            drop(frozen);
            let _ = run.kill();
            panic!("still saying things after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = since.elapsed();
    drop(frozen);
    let ended = Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if ended.elapsed() > Duration::from_secs(60) {
            let _ = run.kill();
            panic!("said everything, and still running a minute after the thaw");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let output = std::process::Output {
        status,
        stdout,
        stderr,
    };
    (output, took)
}

#[test]
fn a_stopped_webdav_server_fails_the_run_within_the_stall_timeout() {
    let env = Env::new();
    video_source(&env, 40);
    let served = env.path("served");
    fs::create_dir_all(&served).unwrap();
    let port = free_port();
    let server = Server::start(
        Command::new("rclone")
            .args(["serve", "webdav", "--addr", &format!("127.0.0.1:{port}")])
            .args(["--user", "u", "--pass", "p"])
            .arg(&served),
        port,
    );
    let dest = format!(
        "[[destination]]\nname = \"dav\"\nkind = \"webdav\"\nendpoint = \"http://127.0.0.1:{port}\"\nusername = \"u\"\npassword = \"p\"\nstall_timeout = \"5s\"\nbandwidth_limit = \"16M\"\n"
    );
    let dir = served.clone();
    stalls_fail_in_time(
        &env,
        &dest,
        || holds_a_file(&dir),
        || {
            server.freeze();
            Box::new(())
        },
    );
}

#[test]
fn a_frozen_s3_connection_fails_the_run_within_the_stall_timeout() {
    let env = Env::new();
    video_source(&env, 40);
    let s = servers();
    let target = s["S3_ENDPOINT"].trim_start_matches("http://").to_owned();
    let (port, frozen) = freezable_relay(target);
    let (s3, _) = destination(
        "s3",
        "stall",
        "stall_timeout = \"5s\"\nbandwidth_limit = \"16M\"",
    );
    let s3 = s3.replace(&s["S3_ENDPOINT"], &format!("http://127.0.0.1:{port}"));
    let env_ref = &env;
    stalls_fail_in_time(
        &env,
        &s3,
        || state_rows(env_ref, "s3") > 0,
        || {
            frozen.store(true, Ordering::Relaxed);
            Box::new(())
        },
    );
}

#[test]
fn a_stopped_ssh_server_fails_the_run_within_the_stall_timeout() {
    let env = Env::new();
    video_source(&env, 40);
    let s = servers();
    let dir = PathBuf::from(
        std::env::var("DARVAULT_TEST_SERVERS_DIR")
            .unwrap_or_else(|_| "/tmp/darvault-test-servers".into()),
    );
    let port = free_port();
    let root = env.path("sftp-root");
    fs::create_dir_all(&root).unwrap();
    let server = Server::start(
        Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .args([
                "-o",
                &format!("Port={port}"),
                "-o",
                &format!("PidFile={}", env.path("sshd.pid").display()),
            ]),
        port,
    );
    let dest = format!(
        "[[destination]]\nname = \"sftp\"\nkind = \"sftp\"\nendpoint = \"ssh://127.0.0.1:{port}\"\nuser = {:?}\nkey = {:?}\nknown_hosts_strategy = \"accept\"\nroot = {:?}\nstall_timeout = \"5s\"\nbandwidth_limit = \"16M\"\n",
        s["SFTP_USER"],
        s["SFTP_KEY"],
        root.display().to_string()
    );
    let r = root.clone();
    stalls_fail_in_time(
        &env,
        &dest,
        || holds_a_file(&r),
        || {
            server.freeze();
            Box::new(())
        },
    );
}

#[test]
fn a_closed_port_fails_within_seconds_naming_the_cause() {
    let env = Env::new();
    video_source(&env, 1);
    let port = free_port();
    let (s3, _) = destination("s3", "closed", "");
    let s3 = s3.replace(
        &servers()["S3_ENDPOINT"],
        &format!("http://127.0.0.1:{port}"),
    );
    let dav = format!(
        "[[destination]]\nname = \"dav\"\nkind = \"webdav\"\nendpoint = \"http://127.0.0.1:{port}\"\nusername = \"u\"\npassword = \"p\"\n"
    );
    configure(&env, "1M", &format!("{s3}\n{dav}"));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let started = Instant::now();
    let out = env.run(&["--json", "replicate"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 1);
    for d in json(&out)["destinations"].as_array().unwrap() {
        let error = d["error"].as_str().unwrap();
        assert!(error.contains("connection refused"), "{error}");
        assert!(error.contains(&port.to_string()), "names where: {error}");
    }
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn kill_9_mid_sftp_leaves_no_ssh_behind() {
    let env = Env::new();
    video_source(&env, 40);
    let (sftp, local) = destination("sftp", "kill9", "bandwidth_limit = \"8M\"");
    configure(&env, "8M", &sftp);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    // A token in darvault's environment that ssh has no use for.
    let canary = "canary-token-9f3e1c";
    let mut run = env
        .cmd()
        .arg("replicate")
        .env("SOME_CLOUD_TOKEN", canary)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let root = local.unwrap();
    let started = Instant::now();
    while !holds_a_file(&root) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing was sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let tag = env.tmp.path().display().to_string();
    assert!(
        processes_mentioning(&tag)
            .iter()
            .any(|(_, _, c)| c.contains("ssh")),
        "an ssh master runs while sending"
    );
    for (pid, _, command) in processes_mentioning(&tag) {
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            !command.contains("ssh") || !environ.contains(canary),
            "ssh got darvault's whole environment: {command}"
        );
    }
    run.kill().unwrap();
    run.wait().unwrap();
    // A watcher tells the master to exit once darvault is gone (tools::ssh).
    std::thread::sleep(Duration::from_secs(1));
    let left: Vec<_> = processes_mentioning(&tag)
        .into_iter()
        .filter(|(_, _, c)| c.contains("ssh"))
        .collect();
    assert!(left.is_empty(), "ssh outlived darvault by 1 s: {left:?}");
    // Control sockets live in darvault's own private state folder, not beside it, and the
    // next run clears those of masters that are gone.
    let state = env.path("home/.local/state");
    let beside: Vec<_> = names_in(&state)
        .into_iter()
        .filter(|n| n.starts_with(".ssh-connection"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    let control = state.join("darvault/ssh");
    assert_eq!(
        fs::metadata(&control).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(code(&env.run(&["list"])), 0);
    let stale = names_in(&control);
    assert!(stale.is_empty(), "{stale:?}");
}

/// One writer per copy: a repairing audit of a destination that replicate is writing exits 7
/// naming the holder, or waits for it with --lock-wait; a plain one says the set being
/// written is in progress, not damaged.
#[test]
fn a_repairing_audit_does_not_write_beside_replicate() {
    let env = Env::new();
    // 48 MiB at 8 MB/s: the replicate still runs while the others try.
    video_source(&env, 48);
    let usb = env.path("usb");
    configure(
        &env,
        "4M",
        &format!(
            "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\nbandwidth_limit = \"8M\"\n",
            usb.display().to_string()
        ),
    );
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let run = env
        .cmd()
        .arg("replicate")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !holds_a_file(&usb) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing was sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A plain audit meanwhile: the set being written is in progress, never damage.
    let out = env.run(&["--json", "audit", "usb"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["copies"][0]["problems"]
            .to_string()
            .contains("being written"),
        "{report}"
    );
    let out = env.run(&["audit", "usb", "--repair"]);
    assert_eq!(code(&out), 7, "{}", stdout(&out));
    // From another state folder and no config (a second user, `sudo`, another machine the
    // disk is plugged into): the lock is on the copy itself.
    let out = Command::new(env!("CARGO_BIN_EXE_darvault"))
        .env("HOME", env.path("other-home"))
        .env("XDG_STATE_HOME", env.path("other-home/state"))
        .env("XDG_CONFIG_HOME", env.path("other-home/config"))
        .arg("audit")
        .arg(&usb)
        .arg("--repair")
        .output()
        .unwrap();
    assert_eq!(code(&out), 7, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("pid"),
        "names the holder: {}",
        stdout(&out)
    );
    let out = env.run(&["--lock-wait", "2m", "audit", "usb", "--repair"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let mut run = run;
    assert!(run.wait().unwrap().success());
}

/// The FUSE daemon serving `point`, frozen (SIGSTOP) until dropped: the disk then hangs
/// instead of failing, as a dying disk or a stuck driver does. Every call into the mount
/// waits for an answer that does not come.
struct FrozenDisk(i32);

impl FrozenDisk {
    fn freeze(point: &Path) -> FrozenDisk {
        let out = Command::new("pgrep")
            .arg("-f")
            .arg(format!("exfat-fuse .* {}$", point.display()))
            .output()
            .unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no FUSE daemon serves {}", point.display()));
        // SAFETY: a signal to a process of the test's own making.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        FrozenDisk(pid)
    }
}

impl Drop for FrozenDisk {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

fn usb_on_exfat(stick: &Path, extra: &str) -> String {
    format!(
        "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\nrequire_mount = true\nstall_timeout = \"3s\"\n{extra}",
        stick.join("backups").display().to_string()
    )
}

#[test]
fn a_usb_disk_that_hangs_mid_replicate_fails_the_run_within_the_stall_timeout() {
    let env = Env::new();
    video_source(&env, 40);
    let stick = env.path("stick");
    let _mounted = disk_image(&env, "128M", "mkfs.exfat", "mount.exfat-fuse", &stick);
    let dest = usb_on_exfat(&stick, "bandwidth_limit = \"16M\"\n");
    stalls_fail_in_time(
        &env,
        &dest,
        || holds_a_file(&stick),
        || Box::new(FrozenDisk::freeze(&stick)),
    );
}

/// A disk that hangs from the start: each verb that reads it ends within seconds of the
/// stall timeout, saying which copy stopped answering, and leaves no process behind.
#[test]
fn every_verb_on_a_usb_disk_that_hangs_ends_in_time_naming_it() {
    let env = Env::new();
    video_source(&env, 12);
    let stick = env.path("stick");
    let _mounted = disk_image(&env, "128M", "mkfs.exfat", "mount.exfat-fuse", &stick);
    configure(&env, "4M", &usb_on_exfat(&stick, ""));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    assert_eq!(code(&env.run(&["replicate", "--to", "usb"])), 0);
    assert_eq!(code(&env.run(&["backup", "--incr"])), 0);
    let target = env.path("restored").display().to_string();
    for args in [
        vec!["audit", "usb"],
        vec!["audit", "usb", "--deep", "--repair"],
        vec!["replicate", "--to", "usb"],
        vec!["restore", "--from", "usb", "--target", &target],
        vec!["list", "usb"],
        vec!["status"],
    ] {
        let frozen = FrozenDisk::freeze(&stick);
        let run = env
            .cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, took) = said_and_ended(run, Box::new(frozen));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        eprintln!("darvault {args:?}: {took:?}, {said}");
        // status reports a copy it cannot read and goes on; the others fail.
        if args[0] != "status" {
            assert_ne!(code(&out), 0, "darvault {args:?}: {said}");
        }
        assert!(
            said.contains("stopped answering"),
            "darvault {args:?}: {said}"
        );
    }
}

/// A server that takes connections and never answers (nor closes them).
fn mute_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for client in listener.incoming().flatten() {
            held.push(client);
        }
    });
    port
}

/// A small FULL in the repository, and a WebDAV destination `mute` on a server that never
/// answers, with this stall_timeout.
fn backup_beside_a_mute_server(env: &Env, stall: &str) {
    video_source(env, 2);
    let port = mute_server();
    let dest = format!(
        "[[destination]]\nname = \"mute\"\nkind = \"webdav\"\nendpoint = \"http://127.0.0.1:{port}\"\n\
         username = \"u\"\npassword = \"p\"\nroot = \"/x\"\nstall_timeout = {stall:?}\n"
    );
    configure(env, "8M", &dest);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
}

/// One way to stop: SIGTERM reaches a wait on a server that never answers (a long
/// stall_timeout, retries pending): every verb that reads a copy ends with exit 130 within
/// 2 s.
#[test]
fn sigterm_ends_a_wait_on_a_server_that_never_answers() {
    let env = Env::new();
    backup_beside_a_mute_server(&env, "2m");
    let target = env.path("restored").display().to_string();
    let verbs: [&[&str]; 5] = [
        &["replicate"],
        &["audit", "mute"],
        &["list", "mute"],
        &["restore", "--from", "mute", "--target", &target],
        &["drill", "mute"],
    ];
    for args in verbs {
        signalled_while_waiting(&env, args, libc::SIGTERM, Duration::from_millis(1500));
    }
}

/// `darvault ARGS`, still waiting after `wait`, sent `signal`: exit 130 within 2 s.
fn signalled_while_waiting(env: &Env, args: &[&str], signal: i32, wait: Duration) {
    let mut run = env
        .cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(wait);
    assert!(
        run.try_wait().unwrap().is_none(),
        "{args:?}: still waiting on the server"
    );
    // SAFETY: a signal to a child of the test's own.
    unsafe { libc::kill(run.id() as i32, signal) };
    let signalled = Instant::now();
    let status = run.wait().unwrap();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(130), "{args:?}: {status:?}");
    assert!(took < Duration::from_secs(2), "{args:?}: took {took:?}");
}

/// A server that answers every request "503 Service Unavailable".
fn busy_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let mut request = [0u8; 65536];
            let _ = client.read(&mut request);
            let _ = client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// One way to stop, whatever the copy is doing: a signal (SIGINT as a terminal's Ctrl-C
/// sends it, or SIGTERM) ends a replicate within 2 s with exit 130 while a WebDAV server
/// answers 503 (retries pending, pauses doubling), and while ssh waits on an SFTP server that
/// took the connection and says nothing (a stopped sshd); no ssh is left behind.
#[test]
fn a_signal_ends_a_replicate_waiting_on_retries_or_on_ssh() {
    let env = Env::new();
    video_source(&env, 2);
    let (busy, silent) = (busy_server(), mute_server());
    let key = servers()["SFTP_KEY"].clone();
    let dests = format!(
        "[[destination]]\nname = \"busy\"\nkind = \"webdav\"\nendpoint = \"http://127.0.0.1:{busy}\"\n\
         username = \"u\"\npassword = \"p\"\nroot = \"/x\"\n\n\
         [[destination]]\nname = \"silent\"\nkind = \"sftp\"\nendpoint = \"ssh://127.0.0.1:{silent}\"\n\
         user = \"u\"\nkey = {key:?}\nknown_hosts_strategy = \"accept\"\nroot = \"/x\"\n"
    );
    configure(&env, "8M", &dests);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    for (destination, signal) in [("busy", libc::SIGINT), ("silent", libc::SIGTERM)] {
        let args = ["replicate", "--to", destination];
        signalled_while_waiting(&env, &args, signal, Duration::from_millis(2500));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let port = format!("-p {silent}");
    while !processes_mentioning(&port).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_mentioning(&port), vec![], "ssh left behind");
}

/// One deadline: on a server that takes connections and never answers, every verb that reads
/// a copy fails within its stall_timeout (3 s here) plus a little, never a multiple of it
/// (retries and layers share it), naming the stall.
#[test]
fn every_verb_on_a_mute_server_fails_within_one_stall_timeout() {
    let env = Env::new();
    backup_beside_a_mute_server(&env, "3s");
    let target = env.path("restored").display().to_string();
    let verbs: [&[&str]; 5] = [
        &["replicate"],
        &["audit", "mute"],
        &["list", "mute"],
        &["restore", "--from", "mute", "--target", &target],
        &["drill", "mute"],
    ];
    for args in verbs {
        let started = Instant::now();
        let out = env.cmd().args(args).output().unwrap();
        let took = started.elapsed();
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert_ne!(code(&out), 0, "{args:?}: {said}");
        assert!(said.contains("nothing moved"), "{args:?}: {said}");
        assert!(
            took < Duration::from_secs(6),
            "{args:?}: took {took:?}: {said}"
        );
    }
}

/// Where a test looks at a copy's lock: the server's folder, or the S3 bucket.
enum LockAt {
    Folder(PathBuf),
    Bucket(String),
}

impl LockAt {
    fn exists(&self) -> bool {
        match self {
            LockAt::Folder(root) => root.join(".darvault/lock").exists(),
            LockAt::Bucket(prefix) => {
                let out = rclone_s3(&["lsf", &format!("t:{prefix}/.darvault/")])
                    .output()
                    .unwrap();
                stdout(&out).lines().any(|l| l == "lock")
            }
        }
    }

    fn write(&self, text: &str) {
        match self {
            LockAt::Folder(root) => fs::write(root.join(".darvault/lock"), text).unwrap(),
            LockAt::Bucket(prefix) => {
                let mut rcat = rclone_s3(&["rcat", &format!("t:{prefix}/.darvault/lock")])
                    .stdin(Stdio::piped())
                    .spawn()
                    .unwrap();
                rcat.stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                assert!(rcat.wait().unwrap().success(), "rclone rcat");
            }
        }
    }
}

/// The writer lock is on the copy itself: a replicate to a remote copy holds
/// `.darvault/lock` there, so a repairing audit or a cleanup run with another state folder
/// (another machine, another config) exits 7 naming the holder; the lock goes when the
/// replicate ends; one whose holder is gone (a process of this machine that no longer runs,
/// or a heartbeat older than five minutes) is taken over with a notice, a live one is not.
fn a_remote_copy_carries_its_own_writer_lock(kind: &str) {
    let env = Env::new();
    // 48 MiB at 8 MB/s: the replicate still runs while the two others try.
    video_source(&env, 48);
    let tag = format!("copy-lock-{kind}");
    let (dest, root) = destination(
        kind,
        &tag,
        "bandwidth_limit = \"8M\"\nkeep = { full = \"0d\", diff = \"0d\", incr = \"0d\" }\n",
    );
    let lock = match root {
        Some(root) => LockAt::Folder(root),
        None => LockAt::Bucket(format!("{tag}-{}", std::process::id())),
    };
    configure(&env, "4M", &dest);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let elsewhere = |args: &[&str]| {
        let out = env
            .cmd()
            .env("XDG_STATE_HOME", env.path("another-machine/state"))
            .args(args)
            .output()
            .unwrap();
        (code(&out), format!("{}{}", stdout(&out), stderr(&out)))
    };
    let mut run = env
        .cmd()
        .arg("replicate")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !lock.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no lock on the copy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [
        &["audit", kind, "--repair"][..],
        &["cleanup", "--yes", "--dest", kind][..],
    ] {
        let (code, said) = elsewhere(args);
        assert_eq!(code, 7, "{args:?}: {said}");
        assert!(
            said.contains("replicate (pid"),
            "{args:?} names the holder: {said}"
        );
    }
    assert!(run.wait().unwrap().success());
    assert!(!lock.exists(), "released at the end");

    let holder = |host: &str, pid: u32, silent: i64| {
        let now = jiff::Timestamp::now();
        let heartbeat = now - jiff::SignedDuration::from_secs(silent);
        serde_json::json!({
            "host": host, "pid": pid, "run": "r", "command": "replicate",
            "started": heartbeat.to_string(), "heartbeat": heartbeat.to_string(),
        })
        .to_string()
    };
    // A live holder on another machine.
    lock.write(&holder("another-host", 1, 10));
    let (code, said) = elsewhere(&["audit", kind, "--repair"]);
    assert_eq!(code, 7, "{said}");
    assert!(said.contains("another-host"), "{said}");
    // Gone: silent for ten minutes, or a process of this machine that no longer runs.
    for gone in [
        holder("another-host", 1, 600),
        holder(&darvault::host_name(), 4_194_999, 0),
    ] {
        lock.write(&gone);
        let (code, said) = elsewhere(&["-v", "audit", kind, "--repair"]);
        assert_eq!(code, 0, "{said}");
        assert!(said.contains("taking over the lock"), "{said}");
        assert!(!lock.exists(), "released at the end");
    }
}

#[test]
fn an_sftp_copy_carries_its_own_writer_lock() {
    a_remote_copy_carries_its_own_writer_lock("sftp");
}

#[test]
fn an_s3_copy_carries_its_own_writer_lock() {
    a_remote_copy_carries_its_own_writer_lock("s3");
}

/// The S3 server takes a lock only if none is there, in one step: a create of an object that
/// exists is refused (so two runs that find the copy free at the same moment cannot both
/// take it). Checked here, not assumed of the server.
#[test]
fn the_s3_server_refuses_to_create_a_lock_that_exists() {
    let s = servers();
    let op = opendal::Operator::via_iter(
        "s3",
        [
            ("endpoint", s["S3_ENDPOINT"].as_str()),
            ("bucket", s["S3_BUCKET"].as_str()),
            ("region", "us-east-1"),
            ("access_key_id", s["S3_ACCESS_KEY"].as_str()),
            ("secret_access_key", s["S3_SECRET_KEY"].as_str()),
            ("root", &format!("/exclusive-{}", std::process::id())),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let create = |text: &'static str| op.write_with(".darvault/lock", text).if_not_exists(true);
        create("first").await.expect("a free lock is created");
        let refused = create("second")
            .await
            .expect_err("a held lock is not replaced");
        assert_eq!(
            refused.kind(),
            opendal::ErrorKind::ConditionNotMatch,
            "{refused}"
        );
        let kept = op.read(".darvault/lock").await.unwrap().to_vec();
        assert_eq!(kept, b"first");
    });
}

/// A proxy in front of `upstream` (host:port) that changes one byte in the body of every
/// PUT larger than 1 MiB (a link or a box on the way that corrupts data), and passes
/// everything else as it is. Returns its port.
fn corrupting_proxy(upstream: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(&upstream).unwrap();
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || forward_requests(client, server));
        }
    });
    port
}

/// Requests from `client` to `server`, one after another, a byte of each large PUT body
/// changed.
fn forward_requests(client: TcpStream, mut server: TcpStream) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(client);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_lowercase();
        let length: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if text.starts_with("put ") && length > 1 << 20 {
            body[1000] ^= 0x01;
        }
        if server.write_all(&head).is_err() || server.write_all(&body).is_err() {
            return;
        }
    }
}

/// An S3 destination `name` (one retry) reached through a proxy that changes a byte of each
/// upload, and the same destination reached directly.
fn s3_through_a_corrupting_proxy(name: &str) -> (String, String) {
    let s = servers();
    let upstream = s["S3_ENDPOINT"].trim_start_matches("http://").to_owned();
    let proxy = corrupting_proxy(upstream);
    let (dest, _) = destination("s3", name, "retries = 1\n");
    let through = dest.replace(&s["S3_ENDPOINT"], &format!("http://127.0.0.1:{proxy}"));
    (through, dest)
}

/// Verified on upload: bytes changed on the way to an S3 copy are refused by the server (the
/// SHA-256 sent with them does not match), tried again, and reported; no set is published
/// there.
#[test]
fn bytes_changed_on_the_way_to_s3_are_refused_and_nothing_is_published() {
    let env = Env::new();
    video_source(&env, 3);
    let (dest, _) = s3_through_a_corrupting_proxy("corrupted");
    configure(&env, "2M", &dest);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let out = env.run(&["--json", "replicate"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let error = json(&out)["destinations"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("their SHA-256 is not the manifest's") && error.contains("after 1 tries"),
        "{error}"
    );
    let listed = env.run(&["--json", "list", "s3"]);
    let sets = json(&listed)["definitions"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| d["sets"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        })
        .unwrap_or(0);
    assert_eq!(sets, 0, "nothing published: {}", stdout(&listed));
}

/// A file above the single-PUT limit (lowered to 20 MiB here) goes to S3 in parts, each with
/// its SHA-256: a byte changed on the way to a part is refused by the server and reported,
/// nothing is published; sent as it is, the server keeps the composite checksum of the
/// parts (three here) and an audit proves the copy.
#[test]
fn a_file_above_the_single_put_limit_goes_in_checked_parts() {
    let env = Env::new();
    video_source(&env, 40);
    let s = servers();
    let (through, dest) = s3_through_a_corrupting_proxy("parts");
    configure(&env, "48M", &through);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let in_parts = |args: &[&str]| {
        env.cmd()
            .env("DARVAULT_TEST_SINGLE_PUT_MAX", (20u64 << 20).to_string())
            .args(args)
            .output()
            .unwrap()
    };
    let out = in_parts(&["--json", "replicate"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let error = json(&out)["destinations"][0]["error"].to_string();
    assert!(
        error.contains("their SHA-256 is not the manifest's"),
        "{error}"
    );

    configure(&env, "48M", &dest);
    let out = in_parts(&["replicate"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let set = env.sets("docs").pop().unwrap();
    let name = name_of(&set);
    let root = dest
        .lines()
        .find_map(|l| l.strip_prefix("root = "))
        .unwrap()
        .trim_matches('"')
        .trim_start_matches('/')
        .to_owned();
    let head = curl_s3(&[
        "-I",
        "-H",
        "x-amz-checksum-mode: ENABLED",
        &format!(
            "{}/{}/{root}/docs/{name}/{name}.1.dar",
            s["S3_ENDPOINT"], s["S3_BUCKET"]
        ),
    ]);
    let head = stdout(&head).to_lowercase();
    assert!(
        head.lines()
            .any(|l| l.starts_with("x-amz-checksum-sha256:") && l.trim_end().ends_with("-3")),
        "the composite checksum of three parts: {head}"
    );
    // The set was made before the limit was lowered: its manifest has no parts' digests,
    // so the composite cannot be read against it and the slice is read whole.
    let slice = std::fs::metadata(set.join(format!("{name}.1.dar")))
        .unwrap()
        .len();
    let downloaded = |out: &std::process::Output| {
        assert_eq!(code(out), 0, "{}", stdout(out));
        let proof = &json(out)["copies"][0]["proof"];
        proof["bytes_downloaded"].as_u64().unwrap()
    };
    let before = downloaded(&in_parts(&["--json", "audit", "s3"]));
    assert!(before >= slice, "read whole: {before} of {slice}");

    // A set made with the limit lowered records its parts' digests: the next audit proves
    // its slice from the composite the server keeps, unread.
    assert_eq!(code(&in_parts(&["backup", "--full"])), 0);
    let newer = env.sets("docs").pop().unwrap();
    let manifest = std::fs::read_to_string(newer.join("MANIFEST.toml")).unwrap();
    assert!(manifest.contains("[file.parts]"), "{manifest}");
    assert_eq!(code(&in_parts(&["replicate"])), 0);
    let after = downloaded(&in_parts(&["--json", "audit", "s3"]));
    assert!(
        after < before + (1 << 20),
        "the newer set's slices proven unread: {after} against {before}"
    );
}
