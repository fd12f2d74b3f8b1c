//! No secret on disk, in output or in a child that does not need it: after runs that touch S3
//! (SeaweedFS), WebDAV, a webhook and an encrypted definition, with -vv, every log, the state
//! database, every output, the repository and the environment dar and par2 ran with are
//! searched for each secret. The state folder and what `init` writes are private.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// A wrapper that records the environment it ran with, then runs the real tool.
fn recording_wrapper(env: &Env, tool: &str, real: &str) -> String {
    let wrapper = env.path(&format!("bin/{tool}"));
    let record = env.path(&format!("environ/{tool}"));
    fs::create_dir_all(record.parent().unwrap()).unwrap();
    write(
        &wrapper,
        format!(
            "#!/bin/sh\nenv >> {:?}\nexec {real} \"$@\"\n",
            record.display().to_string()
        )
        .as_bytes(),
    );
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.display().to_string()
}

fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_owned())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn no_secret_reaches_a_log_a_file_an_output_or_a_child() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let s = servers();
    let (url, _seen) = recording_server();
    let hook_url = format!("{url}/hooks/do-not-leak-this-token");
    let passphrase = "correct horse battery staple 42";
    let secrets = [
        passphrase,
        s["S3_SECRET_KEY"].as_str(),
        s["WEBDAV_PASSWORD"].as_str(),
        "do-not-leak-this-token",
    ];
    let dar = recording_wrapper(&env, "dar", "/usr/bin/dar");
    let par2 = recording_wrapper(&env, "par2", "/usr/local/bin/par2");
    let unique = format!("secrets-{}", std::process::id());
    env.config(&format!(
        "[tools]\ndar = {dar:?}\npar2 = {par2:?}\n\n\
         [[definition]]\nname = \"docs\"\nsource = {src:?}\nslice_size = \"128K\"\n\
         [definition.encryption]\npassphrase_env = \"DV_PASSPHRASE\"\n\n\
         [notify]\nwebhook_url_env = \"DV_HOOK\"\n\n\
         [[destination]]\nname = \"s3\"\nkind = \"s3\"\nendpoint = {s3:?}\nbucket = {bucket:?}\n\
         region = \"us-east-1\"\naccess_key_id = {ak:?}\nsecret_access_key_env = \"DV_S3_SECRET\"\n\
         root = \"/{unique}\"\n\n\
         [[destination]]\nname = \"dav\"\nkind = \"webdav\"\nendpoint = {dav:?}\nusername = {du:?}\n\
         password = {dp:?}\nroot = \"/{unique}\"\n",
        src = env.path("src").display().to_string(),
        s3 = s["S3_ENDPOINT"],
        bucket = s["S3_BUCKET"],
        ak = s["S3_ACCESS_KEY"],
        dav = s["WEBDAV_ENDPOINT"],
        du = s["WEBDAV_USER"],
        dp = s["WEBDAV_PASSWORD"],
    ));
    let mut outputs = Vec::new();
    for args in [
        vec!["-vv", "backup", "--full"],
        vec!["-vv", "replicate"],
        vec!["-vv", "--json", "audit", "--deep"],
        vec!["-vv", "list", "s3"],
        vec!["-vv", "status", "--json"],
    ] {
        let out = env
            .cmd()
            .args(&args)
            .env("DV_PASSPHRASE", passphrase)
            .env("DV_S3_SECRET", &s["S3_SECRET_KEY"])
            .env("DV_HOOK", &hook_url)
            .output()
            .unwrap();
        eprintln!(
            "$ darvault {}: exit {:?}\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            matches!(out.status.code(), Some(0) | Some(6)),
            "darvault {} failed",
            args.join(" ")
        );
        outputs.push((args.join(" "), out.stdout));
        outputs.push((args.join(" ") + " (stderr)", out.stderr));
    }
    let state = env.path("home/.local/state/darvault");
    let mut places: Vec<(String, Vec<u8>)> = outputs;
    for f in files_under(&state)
        .into_iter()
        .chain(files_under(&env.repo()))
        .chain(files_under(&env.path("environ")))
    {
        places.push((f.display().to_string(), fs::read(&f).unwrap()));
    }
    assert!(
        places.iter().any(|(p, _)| p.ends_with("environ/dar")),
        "dar ran through the recording wrapper"
    );
    for (place, bytes) in &places {
        for secret in secrets {
            assert!(!contains(bytes, secret), "{secret:?} found in {place}");
        }
    }
    // The children got a minimal environment: not even the names of the secret variables.
    let environ = fs::read_to_string(env.path("environ/dar")).unwrap();
    for var in ["DV_PASSPHRASE", "DV_S3_SECRET", "DV_HOOK"] {
        assert!(!environ.contains(var), "dar inherited {var}");
    }
    // Private: the state folder, its database and logs.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("state.db")), 0o600);
    for log in files_under(&state.join("logs")) {
        assert_eq!(
            mode(&log) & 0o077,
            0,
            "{} is readable by others",
            log.display()
        );
    }
    // What `init` writes may hold a password: 0600.
    let config = env.path("init/config.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_darvault"))
        .arg("--config")
        .arg(&config)
        .arg("init")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(mode(&config), 0o600);
}

/// Everything darvault makes in its state folder is private from the first run's first byte
/// (the day's log was made readable by others until a second run closed it).
#[test]
fn the_first_run_makes_only_private_files() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\n",
        env.path("src").display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let state = env.path("home/.local/state/darvault");
    let made: Vec<_> = walkdir::WalkDir::new(&state)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_symlink())
        .map(|e| {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            (e.path().to_owned(), mode)
        })
        .collect();
    assert!(
        made.iter().any(|(p, _)| p.ends_with("state.db")),
        "{made:?}"
    );
    assert!(
        made.iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".log")),
        "{made:?}"
    );
    let open: Vec<_> = made.iter().filter(|(_, mode)| mode & 0o077 != 0).collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
}
