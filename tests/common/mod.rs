//! Shared harness: the real darvault binary in an isolated environment on temp dirs, and
//! helpers to build awkward source trees and compare them exactly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            tmp: tempfile::Builder::new()
                .prefix("darvault-test.")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// `darvault` with HOME and XDG dirs inside the temp dir and the config given.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_darvault"));
        c.env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("XDG_STATE_HOME", self.path("home/.local/state"))
            .env_remove("DARVAULT_CONFIG")
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(self.path("config.toml"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        eprintln!(
            "$ darvault {}\n--- stdout\n{}--- stderr\n{}--- exit {:?}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status.code()
        );
        out
    }

    /// `darvault ARGS` with the kill point `point` (`DARVAULT_KILL_AT`, e.g. "put:3"): fails
    /// the test unless darvault was killed there.
    pub fn killed_at_point(&self, point: &str, args: &[&str]) {
        use std::os::unix::process::ExitStatusExt;
        let out = self
            .cmd()
            .env("DARVAULT_KILL_AT", point)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "darvault {args:?}: the kill point {point} was not reached: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `darvault ARGS`, killed with SIGKILL at the `when`th call of `syscall` (strace's fault
    /// injection, so the kill point is chosen, not hoped for): whether it was reached.
    pub fn killed_at(&self, syscall: &str, when: usize, args: &[&str]) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let inner = self.cmd();
        let mut c = Command::new("strace");
        c.args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!("trace={syscall}"))
            .arg("-e")
            .arg(format!("inject={syscall}:signal=KILL:when={when}"))
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args())
            .args(args);
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => c.env(key, value),
                None => c.env_remove(key),
            };
        }
        let out = c.output().unwrap();
        eprintln!(
            "$ darvault {} (killed at {syscall} #{when})\n--- stdout\n{}--- stderr\n{}--- {:?}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        out.status.signal() == Some(libc::SIGKILL) || out.status.code() == Some(137)
    }

    /// Write config.toml: the repository plus the given definitions' TOML.
    pub fn config(&self, definitions: &str) {
        let text = format!(
            "repository = {:?}\n\n{definitions}",
            self.repo().display().to_string()
        );
        fs::write(self.path("config.toml"), text).unwrap();
    }

    /// The published sets of a definition, oldest first (by name: same-day names sort by time).
    pub fn sets(&self, definition: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.repo().join(definition))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.join("MANIFEST.toml").is_file() && !name_of(p).starts_with('.'));
        v.sort_by_key(|p| set_time(p));
        v
    }
}

pub fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn set_time(p: &Path) -> String {
    let manifest = fs::read_to_string(p.join("MANIFEST.toml")).unwrap();
    manifest
        .lines()
        .find(|l| l.starts_with("created = "))
        .unwrap()
        .to_owned()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `--json` run's report.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("not JSON: {}", stdout(out)))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn write(p: &Path, content: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// A tree with the entries backups get wrong: hard links, symlinks (also dangling), empty
/// dirs, spaces, unicode, shell metacharacters and a newline in names, odd permissions.
pub fn awkward_tree(root: &Path) {
    write(&root.join("plain.txt"), b"plain\n");
    write(
        &root.join("dir with spaces/file with spaces.txt"),
        b"spaces\n",
    );
    write(
        &root.join("unicode/\u{e9}t\u{e9} \u{1f600} \u{65e5}\u{672c}.txt"),
        "unicode\n".as_bytes(),
    );
    write(
        &root.join("meta/a $ & ; | ' \" b.txt"),
        b"shell metacharacters\n",
    );
    write(&root.join("meta/new\nline.txt"), b"newline in name\n");
    let mut big = vec![0u8; 300_000];
    fastrand::Rng::with_seed(1).fill(&mut big);
    write(&root.join("data/random.bin"), &big);
    write(&root.join("data/hardlinked.txt"), b"one inode, two names\n");
    fs::hard_link(
        root.join("data/hardlinked.txt"),
        root.join("data/second name.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../plain.txt", root.join("data/link to plain")).unwrap();
    std::os::unix::fs::symlink("nowhere/at all", root.join("data/dangling")).unwrap();
    fs::create_dir_all(root.join("empty/nested empty")).unwrap();
    write(&root.join("modes/private"), b"secret\n");
    fs::set_permissions(
        root.join("modes/private"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    write(&root.join("modes/script.sh"), b"#!/bin/sh\n");
    fs::set_permissions(
        root.join("modes/script.sh"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
}

#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Node {
    Dir {
        mode: u32,
    },
    File {
        sha: String,
        mode: u32,
        mtime: i64,
        links: u64,
    },
    Symlink {
        target: PathBuf,
    },
}

/// Everything that must survive a backup and restore, keyed by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut map = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let m = e.path().symlink_metadata().unwrap();
        let node = if m.file_type().is_symlink() {
            Node::Symlink {
                target: fs::read_link(e.path()).unwrap(),
            }
        } else if m.is_dir() {
            Node::Dir {
                mode: m.mode() & 0o7777,
            }
        } else {
            Node::File {
                sha: darvault::hashing::sha256_hex(&fs::read(e.path()).unwrap()),
                mode: m.mode() & 0o7777,
                mtime: m.mtime(),
                links: m.nlink(),
            }
        };
        map.insert(rel, node);
    }
    map
}

/// Restore a chain with plain dar (no darvault): FULL, then each DIFF/INCR over it.
pub fn extract_chain(sets: &[PathBuf], target: &Path) {
    fs::create_dir_all(target).unwrap();
    for set in sets {
        let base = set.join(name_of(set));
        let out = Command::new("dar")
            .args(["-Q", "-N", "-x"])
            .arg(&base)
            .arg("-R")
            .arg(target)
            .args(["-O", "-w", "--fsa-scope", "none"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dar -x {} failed: {}",
            base.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn assert_same_tree(expected: &BTreeMap<String, Node>, actual: &BTreeMap<String, Node>) {
    for (k, v) in expected {
        assert_eq!(actual.get(k), Some(v), "entry {k:?} differs after restore");
    }
    for k in actual.keys() {
        assert!(
            expected.contains_key(k),
            "restore has an extra entry {k:?} (a deletion was not honoured)"
        );
    }
}

pub fn sha256sum_check(set: &Path) {
    let out = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(set)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum -c failed in {}: {}",
        set.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Endpoints of the servers `scripts/test-servers start` runs (scripts/test starts them).
pub fn servers() -> std::collections::HashMap<String, String> {
    let dir = std::env::var("DARVAULT_TEST_SERVERS_DIR")
        .unwrap_or_else(|_| "/tmp/darvault-test-servers".into());
    let file = Path::new(&dir).join("servers.env");
    let text = fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!("{} is missing: start the test servers with `scripts/test-servers start` (scripts/test does)", file.display())
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A `[[destination]]` of the given kind on the shared test servers, under a root unique to
/// `tag`; also returns where the copy can be read as plain files (None for S3).
pub fn destination(kind: &str, tag: &str, extra: &str) -> (String, Option<PathBuf>) {
    let s = servers();
    let unique = format!("{tag}-{}", std::process::id());
    let (options, local) = match kind {
        "sftp" => (
            format!(
                "endpoint = {:?}\nuser = {:?}\nkey = {:?}\nknown_hosts_strategy = \"accept\"\nroot = {:?}\n",
                s["SFTP_ENDPOINT"],
                s["SFTP_USER"],
                s["SFTP_KEY"],
                format!("{}/{unique}", s["SFTP_ROOT"])
            ),
            Some(PathBuf::from(format!("{}/{unique}", s["SFTP_ROOT"]))),
        ),
        "s3" => (
            format!(
                "endpoint = {:?}\nbucket = {:?}\nregion = \"us-east-1\"\naccess_key_id = {:?}\nsecret_access_key = {:?}\nroot = \"/{unique}\"\n",
                s["S3_ENDPOINT"], s["S3_BUCKET"], s["S3_ACCESS_KEY"], s["S3_SECRET_KEY"]
            ),
            None,
        ),
        "webdav" => (
            format!(
                "endpoint = {:?}\nusername = {:?}\npassword = {:?}\nroot = \"/{unique}\"\n",
                s["WEBDAV_ENDPOINT"], s["WEBDAV_USER"], s["WEBDAV_PASSWORD"]
            ),
            Some(PathBuf::from(format!("{}/{unique}", s["WEBDAV_ROOT"]))),
        ),
        other => panic!("no test server for {other}"),
    };
    (
        format!("[[destination]]\nname = \"{kind}\"\nkind = \"{kind}\"\n{options}{extra}\n"),
        local,
    )
}

/// rclone (a client we did not write) with the test S3 server as remote `t:`, bucket included:
/// `t:<prefix>` is a prefix of the test bucket.
pub fn rclone_s3(args: &[&str]) -> Command {
    rclone_s3_in(&servers()["S3_BUCKET"], args)
}

/// The same, `t:` being a prefix of `bucket` on the test S3 server.
pub fn rclone_s3_in(bucket: &str, args: &[&str]) -> Command {
    let s = servers();
    let mut c = Command::new("rclone");
    c.args(
        args.iter()
            .map(|a| a.replace("t:", &format!("t:{bucket}/"))),
    )
    .env_remove("AWS_CA_BUNDLE")
    .env("RCLONE_CONFIG_T_TYPE", "s3")
    .env("RCLONE_CONFIG_T_PROVIDER", "Other")
    .env("RCLONE_CONFIG_T_ENDPOINT", &s["S3_ENDPOINT"])
    .env("RCLONE_CONFIG_T_ACCESS_KEY_ID", &s["S3_ACCESS_KEY"])
    .env("RCLONE_CONFIG_T_SECRET_ACCESS_KEY", &s["S3_SECRET_KEY"]);
    c
}

/// Download an S3 prefix of the test server.
pub fn download_s3(prefix: &str, target: &Path) {
    download_s3_from(&servers()["S3_BUCKET"], prefix, target)
}

/// Download a prefix of `bucket` on the test S3 server.
pub fn download_s3_from(bucket: &str, prefix: &str, target: &Path) {
    let out = rclone_s3_in(
        bucket,
        &[
            "copy",
            &format!("t:{prefix}"),
            &target.display().to_string(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "rclone copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The realistic corpus (scripts/corpus, shared with the benchmarks) in `root`.
pub fn corpus(root: &Path, size_mb: u32, big_mb: u32) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/corpus"))
        .arg("make")
        .arg(root)
        .args([
            "--size-mb",
            &size_mb.to_string(),
            "--big-mb",
            &big_mb.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/corpus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Round `round` of the corpus's change set: files modified, added, deleted.
pub fn corpus_change(root: &Path, round: u32) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/corpus"))
        .arg("change")
        .arg(root)
        .args(["--round", &round.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/corpus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every PAR2 index a set's manifest lists verifies with Debian's par2 (a judge we did not
/// build the sets with).
pub fn par2_verify_all(set: &Path) {
    let manifest =
        darvault::set::Manifest::parse(&fs::read_to_string(set.join("MANIFEST.toml")).unwrap())
            .unwrap();
    for group in &manifest.par2 {
        let out = Command::new("/usr/bin/par2")
            .current_dir(set)
            .args(["verify", "-q"])
            .arg(set.join(&group.index))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "par2 verify {} in {}: {}",
            group.index,
            set.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `dar -t` of a set's archive.
pub fn dar_test(set: &Path) {
    let out = Command::new("dar")
        .args(["-Q", "-N", "-t"])
        .arg(set.join(name_of(set)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dar -t {}: {}",
        set.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (path, JSON body) of every request the server got.
pub type Requests = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// A local HTTP server that answers 204 and records every request.
pub fn recording_server() -> (String, Requests) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            record.lock().unwrap().push((path, json));
            let mut stream = reader.into_inner();
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (url, seen)
}

/// Processes (pid, state, command line) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String, String)> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("?")
                .to_owned();
            found.push((pid, state, cmdline));
        }
    }
    found
}

/// Files of a set the state database records as sent to `destination`.
pub fn state_rows(env: &Env, destination: &str) -> i64 {
    let db = env.path("home/.local/state/darvault/state.db");
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row(
        "SELECT count(*) FROM replicated_file WHERE destination = ?1",
        [destination],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Whether any regular file lies under `dir`.
pub fn holds_a_file(dir: &Path) -> bool {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .any(|e| e.file_type().is_file())
}

/// A proxy in front of `upstream` (host:port) that counts the bytes the server sends back
/// (answers, headers included): what a client downloads through it. Returns its port and
/// the count.
pub fn counting_proxy(upstream: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicU64, Ordering};
    struct Counted<W>(W, std::sync::Arc<AtomicU64>);
    impl<W: std::io::Write> std::io::Write for Counted<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.0.write(buf)?;
            self.1.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&count);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(&upstream).unwrap();
            let (mut from_server, to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            let counted = std::sync::Arc::clone(&counted);
            std::thread::spawn(move || {
                let mut to_client = Counted(to_client, counted);
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.0.shutdown(std::net::Shutdown::Both);
            });
            let (mut from_client, mut to_server) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
                let _ = to_server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, count)
}

/// `curl` signing for the test S3 server (AWS Signature Version 4), with `args`.
pub fn curl_s3(args: &[&str]) -> std::process::Output {
    let s = servers();
    Command::new("curl")
        .args(["-s", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{}:{}", s["S3_ACCESS_KEY"], s["S3_SECRET_KEY"]))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(args)
        .output()
        .unwrap()
}

/// The HTTP status of a signed request to the test S3 server, its answer's body dropped.
pub fn s3_status(args: &[&str]) -> String {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    stdout(&curl_s3(&all))
}

/// Where a chain's FULL keeps `program` for this machine: `bundle/<uname -m>/<program>`.
pub fn bundled(program: &str) -> String {
    format!("bundle/{}/{program}", std::env::consts::ARCH)
}
