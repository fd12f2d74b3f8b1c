//! Replication to real servers on 127.0.0.1 (OpenSSH, SeaweedFS, rclone WebDAV) and to plain
//! directories, checked with clients we did not write.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A repository with a FULL → DIFF → INCR chain of multi-slice sets.
fn chain(env: &Env, destinations: &str) {
    let src = env.path("src");
    awkward_tree(&src);
    let mut big = vec![0u8; 2_000_000];
    fastrand::Rng::with_seed(9).fill(&mut big);
    write(&src.join("media/clip.mp4"), &big);
    write_config(env, destinations);
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    write(&src.join("plain.txt"), b"changed\n");
    assert_eq!(code(&env.run(&["backup", "--diff"])), 0);
    write(&src.join("new.txt"), b"new\n");
    assert_eq!(code(&env.run(&["backup", "--incr"])), 0);
}

fn write_config(env: &Env, destinations: &str) {
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"256K\"\n\n{destinations}",
        env.path("src").display().to_string()
    ));
}

/// Every set of the repository is on the copy and passes `sha256sum -c` there.
fn assert_complete_copy(env: &Env, copy: &Path) {
    let sets = env.sets("docs");
    assert!(!sets.is_empty());
    for set in sets {
        let there = copy.join("docs").join(name_of(&set));
        sha256sum_check(&there);
    }
}

fn files_in_repository(env: &Env) -> u64 {
    env.sets("docs")
        .iter()
        .map(|s| {
            walkdir::WalkDir::new(s)
                .into_iter()
                .flatten()
                .filter(|e| e.file_type().is_file())
                .count() as u64
        })
        .sum()
}

#[test]
fn every_kind_replicates_verifiably_and_a_rerun_sends_nothing() {
    let env = Env::new();
    let usb = env.path("usb");
    let fs_dest = format!(
        "[[destination]]\nname = \"fs\"\nkind = \"fs\"\nroot = {:?}\n\n",
        usb.display().to_string()
    );
    let (sftp, sftp_dir) = destination("sftp", "every-kind", "");
    let (s3, _) = destination("s3", "every-kind", "");
    let (webdav, webdav_dir) = destination("webdav", "every-kind", "");
    chain(&env, &format!("{fs_dest}{sftp}{s3}{webdav}"));

    let out = env.run(&["--json", "replicate"]);
    assert_eq!(code(&out), 0);
    let report = json(&out);
    let total = files_in_repository(&env);
    for d in report["destinations"].as_array().unwrap() {
        assert_eq!(d["outcome"], "done", "{d}");
        assert_eq!(d["sent"].as_array().unwrap().len(), 3, "{d}");
        // Every file of the sets, counted without the two descriptors sent last.
        assert_eq!(d["files_sent"].as_u64().unwrap() + 2 * 3, total, "{d}");
    }
    assert_complete_copy(&env, &usb);
    assert_complete_copy(&env, &sftp_dir.unwrap());
    assert_complete_copy(&env, &webdav_dir.unwrap());
    let downloaded = env.path("s3-download");
    download_s3(&format!("every-kind-{}", std::process::id()), &downloaded);
    assert_complete_copy(&env, &downloaded);

    let out = env.run(&["--json", "replicate"]);
    assert_eq!(code(&out), 0);
    for d in json(&out)["destinations"].as_array().unwrap() {
        assert_eq!(
            (d["files_sent"].as_u64(), d["present"].as_u64()),
            (Some(0), Some(3)),
            "a re-run sends nothing: {d}"
        );
    }
    // list works on a destination and on a plain path, with or without a config.
    let out = env.run(&["list", "s3"]);
    assert!(
        stdout(&out).contains("destination s3") && stdout(&out).contains("_INCR_"),
        "{}",
        stdout(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_darvault"))
        .arg("--config")
        .arg("/nonexistent.toml")
        .arg("list")
        .arg(&usb)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).matches("_FULL_").count(), 1);

    // A copy wiped behind our back is noticed and sent again.
    fs::remove_dir_all(usb.join("docs")).unwrap();
    let out = env.run(&["--json", "replicate", "--to", "fs"]);
    assert_eq!(
        json(&out)["destinations"][0]["sent"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_complete_copy(&env, &usb);
}

#[test]
fn kill_9_mid_upload_resumes_without_resending_finished_files() {
    let env = Env::new();
    let (s3, _) = destination("s3", "killed", "concurrency = 1\nbandwidth_limit = \"1M\"");
    chain(&env, &s3);
    let mut child = env
        .cmd()
        .args(["replicate"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while state_rows(&env, "s3") < 4 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the upload finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = state_rows(&env, "s3") as u64;

    let (s3, _) = destination("s3", "killed", "");
    write_config(&env, &s3);
    let out = env.run(&["--json", "replicate"]);
    assert_eq!(code(&out), 0);
    let sent = json(&out)["destinations"][0]["files_sent"]
        .as_u64()
        .unwrap();
    assert_eq!(
        sent + done_before + 2 * 3,
        files_in_repository(&env),
        "finished files are not sent again"
    );
    let downloaded = env.path("download");
    download_s3(&format!("killed-{}", std::process::id()), &downloaded);
    assert_complete_copy(&env, &downloaded);
}

/// A WebDAV server of this test's own, so that it can be stopped and started again; stopped
/// when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn own_webdav(dir: &Path, port: u16) -> Served {
    let child = Command::new("rclone")
        .args([
            "serve",
            "webdav",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--user",
            "u",
            "--pass",
            "p",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Served(child)
}

#[test]
fn a_server_gone_mid_run_fails_clearly_and_the_next_run_completes() {
    let env = Env::new();
    let served: PathBuf = env.path("served");
    fs::create_dir_all(&served).unwrap();
    let port = free_port();
    let dest = |extra: &str| {
        format!(
            "[[destination]]\nname = \"dav\"\nkind = \"webdav\"\nendpoint = \"http://127.0.0.1:{port}\"\nusername = \"u\"\npassword = \"p\"\nretries = 1\n{extra}\n"
        )
    };
    chain(&env, &dest("concurrency = 1\nbandwidth_limit = \"1M\""));
    let server = own_webdav(&served, port);
    let run = env
        .cmd()
        .args(["--json", "replicate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while state_rows(&env, "dav") < 3 {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);
    let out = run.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["destinations"][0]["outcome"], "failed");
    assert!(
        report["destinations"][0]["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{report}"
    );
    // What arrived is not a set: no manifest, so list shows none.
    let listed = Command::new(env!("CARGO_BIN_EXE_darvault"))
        .arg("--config")
        .arg("/nonexistent.toml")
        .args(["--json", "list"])
        .arg(&served)
        .output()
        .unwrap();
    let listed = json(&listed);
    let complete = listed["definitions"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| d["sets"].as_array().unwrap().len())
                .sum::<usize>()
        })
        .unwrap_or(0);
    assert_eq!(
        complete, 0,
        "a half-sent set must never look complete: {listed}"
    );

    let _server = own_webdav(&served, port);
    write_config(&env, &dest(""));
    let out = env.run(&["replicate"]);
    assert_eq!(code(&out), 0);
    assert_complete_copy(&env, &served);
}

#[test]
fn wrong_credentials_fail_clearly() {
    let env = Env::new();
    let (s3, _) = destination("s3", "badcreds", "retries = 0");
    let s3 = s3.replace(
        "secret_access_key = \"darvaultsecret\"",
        "secret_access_key = \"wrong\"",
    );
    let (sftp, _) = destination("sftp", "badcreds", "retries = 0");
    let other_key = env.path("other_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(status.success());
    let sftp = sftp.replace(&servers()["SFTP_KEY"], &other_key.display().to_string());
    let (webdav, _) = destination("webdav", "badcreds", "retries = 0");
    let password = &servers()["WEBDAV_PASSWORD"];
    let webdav = webdav.replace(&format!("password = {password:?}"), "password = \"wrong\"");
    chain(&env, &format!("{s3}{sftp}{webdav}"));
    let out = env.run(&["--json", "replicate"]);
    assert_eq!(code(&out), 1);
    for d in json(&out)["destinations"].as_array().unwrap() {
        assert_eq!(d["outcome"], "failed");
        let error = d["error"].as_str().unwrap().to_lowercase();
        assert!(
            error.contains("denied")
                || error.contains("forbidden")
                || error.contains("signature")
                || error.contains("log in")
                || error.contains("refused the user name or password"),
            "{error}"
        );
        if d["destination"].as_str().unwrap().contains("webdav") {
            // A person's words, never a library's dump of the response.
            assert!(
                error.contains("refused the user name or password"),
                "{error}"
            );
            assert!(!error.contains("context: {"), "{error}");
        }
    }
    assert_eq!(
        json(&out)["destinations"].as_array().unwrap().len(),
        3,
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unplugged_disk_is_refused_before_anything_is_written() {
    let env = Env::new();
    let root = env.path("media/usb/darvault");
    let unplugged = format!(
        "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\nrequire_mount = true\n",
        root.display().to_string()
    );
    chain(&env, &unplugged);
    let out = env.run(&["replicate"]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("not on a mounted disk"),
        "{}",
        stdout(&out)
    );
    assert!(!env.path("media").exists(), "nothing may be written");

    // A mounted filesystem (tmpfs here) is accepted; a marker file is required when asked.
    let mounted = tempfile::Builder::new()
        .prefix("darvault-usb.")
        .tempdir_in("/dev/shm")
        .unwrap();
    let dest = format!(
        "[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\nrequire_mount = true\nrequire_marker = \".darvault-disk\"\n",
        mounted.path().display().to_string()
    );
    write_config(&env, &dest);
    let out = env.run(&["replicate"]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("marker file"), "{}", stdout(&out));
    assert_eq!(
        fs::read_dir(mounted.path()).unwrap().count(),
        0,
        "nothing may be written"
    );
    fs::write(mounted.path().join(".darvault-disk"), b"").unwrap();
    assert_eq!(code(&env.run(&["replicate"])), 0);
    assert_complete_copy(&env, mounted.path());
    // The bundled programs (in FULL sets) stay runnable on a copy that keeps modes.
    for set in env
        .sets("docs")
        .iter()
        .filter(|s| name_of(s).contains("_FULL_"))
    {
        let tool = mounted
            .path()
            .join("docs")
            .join(name_of(set))
            .join(bundled("dar_static"));
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&tool).unwrap().permissions());
        assert_eq!(mode & 0o111, 0o111, "{} is not executable", tool.display());
    }
}

/// WebDAV takes a file in one request: streamed, not held in memory, so 64 MiB slices (and
/// the default 1 GiB ones) go through.
#[test]
fn webdav_takes_slices_of_64_mib() {
    let env = Env::new();
    let src = env.path("src");
    let mut rng = fastrand::Rng::with_seed(11);
    let mut chunk = vec![0u8; 1 << 20];
    let mut file = {
        fs::create_dir_all(&src).unwrap();
        fs::File::create(src.join("holiday.mp4")).unwrap()
    };
    for _ in 0..150 {
        rng.fill(&mut chunk);
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
    drop(file);
    let (webdav, local) = destination("webdav", "big", "");
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"64M\"\n\n{webdav}",
        src.display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let out = env.run(&["replicate"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_complete_copy(&env, &local.unwrap());
}
