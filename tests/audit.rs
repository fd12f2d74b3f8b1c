//! Audit and repair in place, on local paths (with and without a config) and on S3 and SFTP
//! copies, with real par2 and dar.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn definition(env: &Env) -> String {
    format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"128K\"\n\n",
        env.path("src").display().to_string()
    )
}

/// A repository with FULL and DIFF sets (the FULL has several slices), replicated to `usb`.
fn repository_and_usb(env: &Env, extra_destinations: &str) -> PathBuf {
    let src = env.path("src");
    awkward_tree(&src);
    let mut media = vec![0u8; 1_500_000];
    fastrand::Rng::with_seed(3).fill(&mut media);
    write(&src.join("media/clip.mp4"), &media);
    let usb = env.path("usb");
    env.config(&format!(
        "{}[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n\n{extra_destinations}",
        definition(env),
        usb.display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    write(&src.join("plain.txt"), b"changed\n");
    assert_eq!(code(&env.run(&["backup", "--diff"])), 0);
    assert_eq!(code(&env.run(&["replicate"])), 0);
    usb
}

fn full_on(copy: &Path) -> PathBuf {
    sets_on(copy, "_FULL_").pop().unwrap()
}

/// The files the manifests of `docs` on `copy` list, all sets together.
fn files_in_manifests(copy: &Path) -> u64 {
    fs::read_dir(copy.join("docs"))
        .unwrap()
        .flatten()
        .map(|set| {
            let manifest = fs::read_to_string(set.path().join("MANIFEST.toml")).unwrap();
            manifest.matches("[[file]]").count() as u64
        })
        .sum()
}

/// The set folders of `docs` on `copy` whose names hold `level`, oldest first.
fn sets_on(copy: &Path, level: &str) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = fs::read_dir(copy.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| name_of(p).contains(level))
        .collect();
    sets.sort();
    sets
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    let at = (at as usize).min(bytes.len() - 1);
    bytes[at] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn audit(env: &Env, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["--json", "audit"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    (
        code(&out),
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("not JSON: {}", stdout(&out))),
    )
}

/// Audit with no config at all: a disk found in a drawer.
fn audit_without_config(env: &Env, copy: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_darvault"))
        .env("HOME", env.path("home"))
        .env("XDG_STATE_HOME", env.path("home/.local/state"))
        .env("XDG_CONFIG_HOME", env.path("nowhere"))
        .args(["--json", "audit"])
        .arg(copy)
        .args(args)
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (
        code(&out),
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("not JSON: {}", stdout(&out))),
    )
}

fn file_statuses(report: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut v = Vec::new();
    for c in report["copies"].as_array().unwrap() {
        for s in c["sets"].as_array().unwrap() {
            for f in s["files"].as_array().unwrap() {
                v.push((
                    f["path"].as_str().unwrap().to_owned(),
                    f["status"].as_str().unwrap().to_owned(),
                    f["repaired_from"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
    }
    v.sort();
    v
}

/// What `--deep` said of a set.
/// The deep checks of a set's JSON report, each as "<what>: <verdict>" ("ok" for passed).
fn deep_lines(set: &serde_json::Value) -> Vec<String> {
    set["deep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let what = match d["check"]["kind"].as_str().unwrap() {
                "par2-verify" => format!("par2 verify {}", d["check"]["index"].as_str().unwrap()),
                _ => "dar -t".to_owned(),
            };
            let verdict = match d["verdict"].as_str().unwrap() {
                "passed" => "ok",
                other => other,
            };
            format!("{what}: {verdict}")
        })
        .collect()
}

#[test]
fn a_healthy_copy_is_proven_with_or_without_a_config() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let (code, report) = audit(&env, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["copies"].as_array().unwrap().len(),
        2,
        "repository and usb by default"
    );
    let (code, report) = audit_without_config(&env, &usb, &["--deep"]);
    assert_eq!(code, 0, "{report}");
    let sets = report["copies"][0]["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    for s in sets {
        let deep = deep_lines(s);
        assert!(
            deep.iter()
                .any(|d| d.starts_with("par2 verify") && d.ends_with("ok")),
            "{deep:?}"
        );
        assert!(
            deep.iter()
                .any(|d| d.starts_with("dar -t") && d.ends_with("ok")),
            "{deep:?}"
        );
    }
}

#[test]
fn damage_anywhere_is_named_and_healed_from_a_healthy_copy() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let full = full_on(&usb);
    let n = name_of(&full);
    let volume = fs::read_dir(&full)
        .unwrap()
        .flatten()
        .map(|e| name_of(&e.path()))
        .filter(|f| f.contains(".vol"))
        .min()
        .unwrap();
    let victims = [
        format!("{n}.2.dar"),
        volume,
        format!("{n}.catalog.1.dar"),
        bundled("dar_static"),
        "MANIFEST.toml".to_owned(),
    ];
    for v in &victims {
        assert!(full.join(v).exists(), "{v} exists in the set");
        flip(&full.join(v), 4000);
    }
    let (code, report) = audit(&env, &["usb"]);
    assert_eq!(code, 4, "damage left, repairable: {report}");
    let found = file_statuses(&report);
    for v in &victims {
        assert!(
            found
                .iter()
                .any(|(p, s, _)| p == v && s == "damaged-repairable"),
            "{v} not named: {found:?}"
        );
    }
    let (code, report) = audit(&env, &["usb", "--repair"]);
    assert_eq!(code, 0, "{report}");
    for (path, status, from) in file_statuses(&report) {
        assert_eq!(
            (status.as_str(), from.as_str()),
            ("repaired", "copy repository"),
            "{path}"
        );
    }
    sha256sum_check(&full);
    let leftovers: Vec<String> = fs::read_dir(&full)
        .unwrap()
        .flatten()
        .map(|e| name_of(&e.path()))
        .filter(|n| n.ends_with(".1") || n.contains("darvault-repair"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Repairs are recorded in the state database.
    let db = rusqlite::Connection::open(env.path("home/.local/state/darvault/state.db")).unwrap();
    let repairs: i64 = db
        .query_row("SELECT count(*) FROM repair WHERE copy = 'usb'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(repairs, victims.len() as i64);
}

#[test]
fn without_another_copy_par2_repairs_what_its_redundancy_allows() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let full = full_on(&usb);
    let n = name_of(&full);
    // Bytes flipped in one slice, a lost slice in the other case, and a truncated catalogue.
    flip(&full.join(format!("{n}.1.dar")), 9000);
    let (code, report) = audit_without_config(&env, &usb, &["--repair", "--deep"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        file_statuses(&report),
        [(format!("{n}.1.dar"), "repaired".into(), "par2".into())]
    );
    sha256sum_check(&full);
    // The deep checks that started with the hashing read the damaged slice: what is reported
    // is their run on the repaired files.
    for set in report["copies"][0]["sets"].as_array().unwrap() {
        let deep = deep_lines(set);
        assert!(deep.len() >= 2, "{deep:?}");
        assert!(deep.iter().all(|d| d.ends_with(": ok")), "{deep:?}");
    }

    // Several slices damaged at once, in one PAR2 group and (when the set has more than one)
    // in another: the whole redundancy is used, and the archive with every rebuilt slice is
    // tested by dar once.
    let last = (1..)
        .take_while(|i| full.join(format!("{n}.{i}.dar")).exists())
        .last()
        .unwrap();
    let damaged: Vec<String> = [1, 2, last]
        .iter()
        .map(|i| format!("{n}.{i}.dar"))
        .collect();
    for slice in &damaged {
        flip(&full.join(slice), 1000);
    }
    let (code, report) = audit_without_config(&env, &usb, &["--repair"]);
    assert_eq!(code, 0, "{report}");
    let mut expected: Vec<(String, String, String)> = damaged
        .iter()
        .map(|s| (s.clone(), "repaired".into(), "par2".into()))
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(file_statuses(&report), expected);
    sha256sum_check(&full);

    fs::remove_file(full.join(format!("{n}.2.dar"))).unwrap();
    let (code, _) = audit_without_config(&env, &usb, &[]);
    assert_eq!(
        code, 4,
        "a lost slice of a small multi-slice set is repairable"
    );
    let (code, _) = audit_without_config(&env, &usb, &["--repair"]);
    assert_eq!(code, 0);
    sha256sum_check(&full);

    let catalogue = full.join(format!("{n}.catalog.1.dar"));
    let len = fs::metadata(&catalogue).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&catalogue)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, report) = audit_without_config(&env, &usb, &["--repair"]);
    assert_eq!(code, 0, "{report}");
    sha256sum_check(&full);
}

#[test]
fn damage_beyond_the_redundancy_is_unrepairable_and_nothing_is_made_worse() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let full = full_on(&usb);
    let n = name_of(&full);
    // Two whole slices lost: one slice's worth of recovery data cannot bring both back.
    fs::remove_file(full.join(format!("{n}.1.dar"))).unwrap();
    flip(&full.join(format!("{n}.2.dar")), 100);
    fs::remove_file(full.join(format!("{n}.3.dar"))).unwrap();
    let before = snapshot(&full);
    let (code, report) = audit_without_config(&env, &usb, &["--repair"]);
    assert_eq!(code, 5, "{report}");
    assert_eq!(
        report["copies"][0]["sets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "unrepairable")
            .count(),
        1
    );
    assert_eq!(
        before,
        snapshot(&full),
        "an unrepairable set is left exactly as it was"
    );
}

#[test]
fn a_hostile_manifest_strays_and_leftovers_are_refused_or_reported() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let full = full_on(&usb);
    // A manifest pointing outside its set is refused, never followed.
    let manifest = fs::read_to_string(full.join("MANIFEST.toml")).unwrap();
    let n = name_of(&full);
    let hostile = manifest.replacen(
        &format!("path = \"{n}.1.dar\""),
        "path = \"../../../etc/passwd\"",
        1,
    );
    assert_ne!(hostile, manifest);
    fs::write(full.join("MANIFEST.toml"), hostile).unwrap();
    write(
        &usb.join("docs/.staging.docs_FULL_2026-01-01_000000/x.1.dar"),
        b"half",
    );
    write(&usb.join("notes.txt"), b"a stray file");
    write(&full.join(format!("{n}.1.dar.1")), b"a par2 leftover");
    let (code, report) = audit_without_config(&env, &usb, &[]);
    assert_eq!(code, 5, "{report}");
    let problems = report["copies"][0]["problems"].to_string();
    assert!(
        problems.contains("staging leftover") && problems.contains("notes.txt"),
        "{problems}"
    );
    let statuses = file_statuses(&report);
    assert!(
        statuses
            .iter()
            .any(|(p, s, _)| p == "MANIFEST.toml" && s == "unrepairable"),
        "{statuses:?}"
    );
    // With the repository as a healthy copy, the manifest comes back.
    let (code, report) = audit(&env, &["usb", "--repair"]);
    assert_eq!(code, 0, "{report}");
    assert!(
        file_statuses(&report)
            .iter()
            .any(|(p, s, _)| p.ends_with(".dar.1") && s == "ok"),
        "the leftover is reported"
    );
    sha256sum_check(&full);
}

#[test]
fn portions_cover_every_set_once() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let mut seen = Vec::new();
    for n in 1..=3 {
        let share = format!("{n}/3");
        let (code, report) = audit_without_config(&env, &usb, &["--portion", &share]);
        assert_eq!(code, 0);
        for s in report["copies"][0]["sets"].as_array().unwrap() {
            seen.push(s["set"].as_str().unwrap().to_owned());
        }
    }
    seen.sort();
    assert_eq!(seen.len(), 2);
    seen.dedup();
    assert_eq!(seen.len(), 2, "each set exactly once");
}

#[test]
fn remote_copies_are_repaired_in_place() {
    let env = Env::new();
    let (s3, _) = destination("s3", "audit", "");
    let (sftp, sftp_dir) = destination("sftp", "audit", "");
    repository_and_usb(&env, &format!("{s3}{sftp}"));
    // S3: replace an object with damaged bytes (through rclone, a client we did not write),
    // then heal it from the repository.
    let full = full_on(&env.repo());
    let n = name_of(&full);
    let damaged = env.path("damaged.dar");
    fs::copy(full.join(format!("{n}.2.dar")), &damaged).unwrap();
    flip(&damaged, 5000);
    let status = rclone_s3(&[
        "copyto",
        &damaged.display().to_string(),
        &format!("t:audit-{}/docs/{n}/{n}.2.dar", std::process::id()),
    ])
    .status()
    .unwrap();
    assert!(status.success());
    let (code, report) = audit(&env, &["s3"]);
    assert_eq!(code, 4, "{report}");
    let (code, report) = audit(&env, &["s3", "--repair"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        file_statuses(&report),
        [(
            format!("{n}.2.dar"),
            "repaired".into(),
            "copy repository".into()
        )]
    );
    let downloaded = env.path("s3-after");
    download_s3(&format!("audit-{}", std::process::id()), &downloaded);
    sha256sum_check(&downloaded.join("docs").join(&n));

    // SFTP with no healthy copy anywhere: PAR2 repair over the wire, the remote file replaced.
    let on_server = sftp_dir.unwrap().join("docs").join(&n);
    flip(&on_server.join(format!("{n}.3.dar")), 1000);
    fs::remove_dir_all(env.repo()).unwrap();
    env.config(&format!("{}{sftp}", definition(&env)));
    let (code, report) = audit(&env, &["sftp", "--repair"]);
    assert_eq!(code, 0, "{report}");
    assert!(
        file_statuses(&report).contains(&(format!("{n}.3.dar"), "repaired".into(), "par2".into())),
        "{report}"
    );
    sha256sum_check(&on_server);
}

#[test]
fn a_chain_missing_its_full_is_reported_broken() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    fs::remove_dir_all(full_on(&usb)).unwrap();
    let (code, report) = audit_without_config(&env, &usb, &[]);
    assert_eq!(code, 5, "{report}");
    let sets = report["copies"][0]["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 1);
    assert!(
        sets[0]["chain_broken"].as_str().unwrap().contains("_FULL_"),
        "{report}"
    );
}

#[test]
fn a_destination_with_repair_auto_is_repaired_without_asking() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let text = fs::read_to_string(env.path("config.toml")).unwrap();
    fs::write(
        env.path("config.toml"),
        text.replace("kind = \"fs\"\n", "kind = \"fs\"\nrepair = \"auto\"\n"),
    )
    .unwrap();
    let full = full_on(&usb);
    flip(&full.join(format!("{}.1.dar", name_of(&full))), 2000);
    let (code, report) = audit(&env, &["usb"]);
    assert_eq!(code, 0, "{report}");
    sha256sum_check(&full);
}

/// A set whose manifest and PAR2 agree with each other but not with its archive (as sets
/// published with the early-hashing fault did): PAR2 would "repair" the good slice into a bad
/// one. The rebuilt slice fails `dar -t`, so the good slice stays and the verdict says why.
#[test]
fn a_repair_that_dar_rejects_is_never_applied() {
    let env = Env::new();
    let src = env.path("src");
    // Hex digits: compressible by half, so dar keeps the compressed form across slices.
    let mut rng = fastrand::Rng::with_seed(7);
    let text: String = (0..1_000_000).map(|_| rng.digit(16)).collect();
    write(&src.join("letters.txt"), text.as_bytes());
    env.config(&definition(&env));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let set = env.sets("docs").pop().unwrap();
    let manifest_path = set.join("MANIFEST.toml");
    let mut manifest =
        darvault::set::Manifest::parse(&fs::read_to_string(&manifest_path).unwrap()).unwrap();
    assert!(manifest.slices().count() >= 3, "several slices");
    let slice = manifest.slices().nth(1).unwrap().path.clone();
    let good = fs::read(set.join(&slice)).unwrap();

    // The "wrong" bytes the manifest and PAR2 will describe: one byte off in the middle.
    let mut wrong = good.clone();
    let middle = wrong.len() / 2;
    wrong[middle] ^= 0x5a;
    fs::write(set.join(&slice), &wrong).unwrap();
    let group = manifest
        .par2
        .iter()
        .find(|g| g.covers.contains(&slice))
        .unwrap()
        .clone();
    let stem = group.index.trim_end_matches(".par2").to_owned();
    for e in fs::read_dir(&set).unwrap().flatten() {
        let n = name_of(&e.path());
        if n == group.index || (n.starts_with(&format!("{stem}.vol")) && n.ends_with(".par2")) {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let out = Command::new("/usr/bin/par2")
        .current_dir(&set)
        .args(["create", "-q"])
        .arg(format!("-s{}", group.block_size))
        .arg(format!("-c{}", group.recovery_blocks))
        .arg("-B")
        .arg(&set)
        .arg("--")
        .arg(set.join(&group.index))
        .args(group.covers.iter().map(|c| set.join(c)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in &mut manifest.files {
        let bytes = fs::read(set.join(&f.path)).unwrap();
        f.size = bytes.len() as u64;
        f.sha256 = darvault::hashing::sha256_hex(&bytes);
    }
    manifest.write(&set).unwrap();
    // The copy holds the good slice again: only the manifest and PAR2 are wrong.
    fs::write(set.join(&slice), &good).unwrap();

    let (code, report) = audit_without_config(&env, &env.repo(), &["--repair"]);
    assert_eq!(code, 5, "{report}");
    let file = report["copies"][0]["sets"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == slice.as_str())
        .unwrap()
        .clone();
    assert_eq!(file["status"], "unrepairable", "{file}");
    let found = file["found"].as_str().unwrap();
    assert!(
        found.contains("dar -t") && found.contains("old file was kept"),
        "{found}"
    );
    assert_eq!(
        fs::read(set.join(&slice)).unwrap(),
        good,
        "the good slice stayed"
    );
    let out = Command::new("dar")
        .args(["-Q", "-N", "-t"])
        .arg(set.join(name_of(&set)))
        .output()
        .unwrap();
    assert!(out.status.success(), "the archive still tests clean");
}

/// A set folder an interrupted copy left (no manifest, slices missing) is not made to look
/// complete: the manifest is written back last, and only over a set whose data is whole.
#[test]
fn a_half_copied_set_is_never_made_to_look_complete() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let full_usb = full_on(&usb);
    let full_repo = full_on(&env.repo());
    let name = name_of(&full_usb);
    for f in ["MANIFEST.toml", "SHA256SUMS"] {
        fs::remove_file(full_usb.join(f)).unwrap();
    }
    let mut n = 2;
    while full_usb.join(format!("{name}.{n}.dar")).exists() {
        fs::remove_file(full_usb.join(format!("{name}.{n}.dar"))).unwrap();
        flip(&full_repo.join(format!("{name}.{n}.dar")), 1000);
        n += 1;
    }
    assert!(n > 4, "several slices are gone");
    let (code, report) = audit(&env, &["usb", "--repair"]);
    assert_ne!(code, 0, "{report}");
    assert!(
        !full_usb.join("MANIFEST.toml").exists(),
        "a manifest over missing slices: {report}"
    );
}

/// Verdicts are values: a definition named like a verdict ("FAILED", "ok") changes none.
#[test]
fn a_definition_named_like_a_verdict_does_not_change_any() {
    let env = Env::new();
    let src = env.path("src");
    awkward_tree(&src);
    env.config(&format!(
        "[[definition]]\nname = \"FAILED\"\nsource = {0:?}\n\n\
         [[definition]]\nname = \"ok\"\nsource = {0:?}\n",
        src.display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    let (code, report) = audit(&env, &["repository", "--deep"]);
    assert_eq!(code, 0, "{report}");
    let sets = report["copies"][0]["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{report}");
    for set in sets {
        assert_eq!(set["status"], "ok", "{set}");
        let deep = deep_lines(set);
        assert!(deep.len() >= 2, "{deep:?}");
        assert!(deep.iter().all(|d| d.ends_with(": ok")), "{deep:?}");
    }
}

/// A repair killed with the healed file written and proven but not yet moved into place
/// leaves the damaged file as it was (audit still calls it damaged, exit 4: nothing worse),
/// and the next repair finishes, leaving no partial file.
#[test]
fn a_repair_killed_before_its_file_is_in_place_is_finished_by_the_next() {
    let env = Env::new();
    let usb = repository_and_usb(&env, "");
    let full = full_on(&usb);
    let slice = full.join(format!("{}.1.dar", name_of(&full)));
    flip(&slice, 100);
    let damaged = fs::read(&slice).unwrap();
    env.killed_at_point("place:1", &["audit", "usb", "--repair"]);
    assert_eq!(fs::read(&slice).unwrap(), damaged, "left as it was");
    let (code, report) = audit(&env, &["usb"]);
    assert_eq!(code, 4, "{report}");
    let (code, report) = audit(&env, &["usb", "--repair"]);
    assert_eq!(code, 0, "{report}");
    let partial: Vec<PathBuf> = walkdir::WalkDir::new(&usb)
        .into_iter()
        .flatten()
        .map(|e| e.into_path())
        .filter(|p| name_of(p).ends_with(".darvault-partial"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
    let sums = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&full)
        .status()
        .unwrap();
    assert!(sums.success());
}

/// base64 of the bytes a hex string spells.
fn base64_of_hex(hex: &str) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The archival cloud copy, checked on upload and proven without download: each object is
/// sent with its manifest SHA-256, which the S3 server checks (a PUT whose bytes do not match
/// is refused: checked here, not assumed of the server) and keeps; an audit then proves every
/// data file by the checksum the server returns, downloading none of them; an object another
/// tool replaced (no checksum kept) is read and hashed, and its damage found.
#[test]
fn an_s3_copy_is_checked_on_upload_and_proven_without_download() {
    let env = Env::new();
    let prefix = format!("checksums-{}", std::process::id());
    let (s3, _) = destination("s3", "checksums", "storage_class = \"STANDARD_IA\"\n");
    repository_and_usb(&env, &s3);
    let s = servers();
    let base = format!("{}/{}/{prefix}", s["S3_ENDPOINT"], s["S3_BUCKET"]);
    let full = full_on(&env.repo());
    let n = name_of(&full);
    let slice = format!("{n}.1.dar");
    let sha = darvault::hashing::sha256_hex(&fs::read(full.join(&slice)).unwrap());
    let head = curl_s3(&[
        "-I",
        "-H",
        "x-amz-checksum-mode: ENABLED",
        &format!("{base}/docs/{n}/{slice}"),
    ]);
    let head = stdout(&head).to_lowercase();
    let kept = format!(
        "x-amz-checksum-sha256: {}",
        base64_of_hex(&sha).to_lowercase()
    );
    assert!(
        head.contains(&kept),
        "the server keeps the checksum sent: {head}"
    );
    assert!(
        head.contains("x-amz-storage-class: standard_ia"),
        "in the storage class asked for: {head}"
    );
    // The server refuses bytes that do not hash to the checksum sent with them.
    let refused = s3_status(&[
        "-X",
        "PUT",
        "--data-binary",
        "changed on the way",
        "-H",
        &format!("x-amz-checksum-sha256: {}", base64_of_hex(&sha)),
        &format!("{base}/refused"),
    ]);
    assert_eq!(refused, "400", "a wrong checksum is refused");

    let (code, report) = audit(&env, &["s3"]);
    assert_eq!(code, 0, "{report}");
    let files: u64 = files_in_manifests(&env.repo());
    let proof = &report["copies"][0]["proof"];
    assert_eq!(proof["files_vouched_by_server"], files, "{report}");
    let downloaded = proof["bytes_downloaded"].as_u64().unwrap();
    assert!(
        downloaded < 64 << 10,
        "only manifests read: {downloaded} bytes"
    );

    // Replaced by a client that keeps no checksum: read, hashed, found damaged.
    let damaged = env.path("damaged.dar");
    fs::copy(full.join(&slice), &damaged).unwrap();
    flip(&damaged, 700);
    let size = fs::metadata(&damaged).unwrap().len();
    let status = rclone_s3(&[
        "copyto",
        &damaged.display().to_string(),
        &format!("t:{prefix}/docs/{n}/{slice}"),
    ])
    .status()
    .unwrap();
    assert!(status.success());
    let (code, report) = audit(&env, &["s3"]);
    assert_eq!(code, 4, "{report}");
    let proof = &report["copies"][0]["proof"];
    assert_eq!(proof["files_vouched_by_server"], files - 1, "{report}");
    assert!(
        proof["bytes_downloaded"].as_u64().unwrap() >= size,
        "{report}"
    );
}

/// Ctrl-C while an SFTP server hashes the copy (its shell held in a pause before hashing,
/// `DARVAULT_TEST_SHELL_PAUSE`): the audit ends within 2 s with exit 130, and no ssh of it
/// is left.
#[test]
fn a_signal_ends_an_audit_while_the_server_hashes() {
    let env = Env::new();
    let (sftp, _) = destination("sftp", "hash-stopped", "");
    repository_and_usb(&env, &sftp);
    let pause = "37.25";
    let paused = || !processes_mentioning(&format!("sleep {pause}")).is_empty();
    let mut run = env
        .cmd()
        .env("DARVAULT_TEST_SHELL_PAUSE", pause)
        .args(["audit", "sftp"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !paused() {
        assert!(
            run.try_wait().unwrap().is_none(),
            "the audit ended before the server hashed"
        );
        assert!(started.elapsed().as_secs() < 60, "the server never hashed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a signal to a child of the test's own.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let signalled = std::time::Instant::now();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        signalled.elapsed().as_secs_f64() < 2.0,
        "{:?}",
        signalled.elapsed()
    );
    let ssh = || {
        processes_mentioning("StrictHostKeyChecking")
            .into_iter()
            .filter(|(_, _, cmdline)| cmdline.contains("base64 -d"))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !ssh().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(ssh(), vec![], "ssh left behind");
    // The server's own shell is the server's: ended here so the test leaves nothing.
    let _ = Command::new("pkill")
        .args(["-f", &format!("sleep {pause}")])
        .status();
}

/// An SFTP copy is proven at rest without downloading it: its server's shell hashes each
/// file (`sha256sum` over ssh) and only manifests are read; a slice damaged on the server's
/// disk is found so, and healed.
#[test]
fn an_sftp_copy_is_hashed_on_the_server() {
    let env = Env::new();
    let (sftp, root) = destination("sftp", "hashed-there", "");
    repository_and_usb(&env, &sftp);
    let files: u64 = files_in_manifests(&env.repo());
    let proven = |report: &serde_json::Value| {
        let proof = &report["copies"][0]["proof"];
        (
            proof["files_vouched_by_server"].as_u64().unwrap(),
            proof["bytes_downloaded"].as_u64().unwrap(),
        )
    };
    let (code, report) = audit(&env, &["sftp"]);
    assert_eq!(code, 0, "{report}");
    let (hashed, downloaded) = proven(&report);
    assert_eq!(hashed, files, "{report}");
    assert!(downloaded < 64 << 10, "only manifests read: {downloaded}");

    let full = full_on(&root.unwrap());
    flip(&full.join(format!("{}.2.dar", name_of(&full))), 3000);
    let (code, report) = audit(&env, &["sftp"]);
    assert_eq!(code, 4, "{report}");
    assert!(
        proven(&report).1 < 64 << 10,
        "found without download: {report}"
    );
    let (code, report) = audit(&env, &["sftp", "--repair"]);
    assert_eq!(code, 0, "{report}");
    sha256sum_check(&full);
}

#[test]
fn a_folder_removed_from_a_webdav_or_sftp_copy_is_made_again_by_the_heal() {
    let env = Env::new();
    let (webdav, webdav_root) = destination("webdav", "lost-folder", "");
    let (sftp, sftp_root) = destination("sftp", "lost-folder", "");
    repository_and_usb(&env, &format!("{webdav}{sftp}"));
    for (name, root) in [("webdav", webdav_root), ("sftp", sftp_root)] {
        let root = root.unwrap();
        let full = full_on(&root);
        let machine = full.join(bundled("dar_static"));
        let machine = machine.parent().unwrap();
        match name {
            // Through the server, whose view of its folder is cached (rclone's).
            "webdav" => webdav_delete(&root, machine),
            _ => fs::remove_dir_all(machine).unwrap(),
        }
        assert!(!machine.exists());
        let (code, report) = audit(&env, &[name]);
        assert_eq!(
            code, 4,
            "{name}: the lost folder's files are missing: {report}"
        );
        let (code, report) = audit(&env, &[name, "--repair"]);
        assert_eq!(code, 0, "{name}: {report}");
        assert!(machine.join("dar_static").is_file(), "{name}: {report}");
        sha256sum_check(&full);
    }
}

/// Remove `folder` (under the WebDAV copy kept at `root`) with a DELETE to the server.
fn webdav_delete(root: &Path, folder: &Path) {
    let s = servers();
    let server_root = Path::new(&s["WEBDAV_ROOT"]);
    let url = format!(
        "{}/{}/",
        s["WEBDAV_ENDPOINT"],
        folder.strip_prefix(server_root).unwrap().display()
    );
    assert!(root.starts_with(server_root));
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "-u",
        ])
        .arg(format!("{}:{}", s["WEBDAV_USER"], s["WEBDAV_PASSWORD"]))
        .arg(&url)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status.starts_with('2'), "DELETE {url}: {status}");
}

/// A bucket made with object lock, for one test.
fn locked_bucket(name: &str) -> String {
    let s = servers();
    let bucket = format!("{name}-{}", std::process::id());
    let made = s3_status(&[
        "-X",
        "PUT",
        "-H",
        "x-amz-bucket-object-lock-enabled: true",
        &format!("{}/{bucket}", s["S3_ENDPOINT"]),
    ]);
    assert_eq!(made, "200", "a bucket with object lock");
    bucket
}

/// Days from now until the lock of the object at `url` ends.
fn locked_days(url: &str) -> i64 {
    let head = stdout(&curl_s3(&["-I", url])).to_lowercase();
    let until = head
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-object-lock-retain-until-date:"))
        .unwrap_or_else(|| panic!("not locked: {head}"))
        .trim()
        .to_uppercase();
    let until: jiff::Timestamp = until.parse().unwrap();
    ((until - jiff::Timestamp::now()).as_secs_f64() / 86400.0).round() as i64
}

/// `lock_retention = "keep"`: each set is locked as long as cleanup keeps it plus 30 days (a
/// DIFF kept 100 days: 130 days; an INCR kept 40: 70), and a set kept forever a year (and
/// the margin) ahead. Sets locked for two days before the setting changed are lengthened
/// by the next replicate; a second replicate asks nothing (the state knows the locks are
/// long). A repair killed right after the server
/// brought a locked version back leaves a copy the next audit proves.
#[test]
fn a_copy_locked_as_long_as_it_keeps_its_sets_renews_the_ones_kept_forever() {
    let env = Env::new();
    let s = servers();
    let bucket = locked_bucket("kept");
    let with_lock = |retention: &str| {
        let lock = format!(
            "object_lock = \"compliance\"\nlock_retention = \"{retention}\"\n\
             keep = {{ full = \"forever\", diff = \"100d\", incr = \"40d\" }}\n"
        );
        let (s3, _) = destination("s3", "kept", &lock);
        s3.replace(
            &format!("bucket = {:?}", s["S3_BUCKET"]),
            &format!("bucket = {bucket:?}"),
        )
    };
    let usb = repository_and_usb(&env, &with_lock("2d"));
    let prefix = format!("kept-{}", std::process::id());
    let object = |set: &Path| {
        let n = name_of(set);
        format!("{}/{bucket}/{prefix}/docs/{n}/{n}.1.dar", s["S3_ENDPOINT"])
    };
    let (full, diff) = (
        full_on(&env.repo()),
        sets_on(&env.repo(), "_DIFF_")[0].clone(),
    );
    assert_eq!(locked_days(&object(&full)), 2);

    env.config(&format!(
        "{}[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n\n{}",
        definition(&env),
        usb.display().to_string(),
        with_lock("keep")
    ));
    let renew = || {
        let out = env.run(&["--json", "replicate", "--to", "s3"]);
        assert_eq!(common::code(&out), 0, "{}", stderr(&out));
        json(&out)["destinations"][0]["locks_renewed"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        renew(),
        2,
        "the FULL and the DIFF, both locked for two days"
    );
    let year = locked_days(&object(&full));
    assert!((394..=397).contains(&year), "a year and 30 days: {year}");
    let diff_days = locked_days(&object(&diff));
    assert!(
        (129..=131).contains(&diff_days),
        "100 days kept, 30 of margin: {diff_days}"
    );
    assert_eq!(renew(), 0, "known to be long: nothing asked");

    write(&env.path("src/plain.txt"), b"changed again\n");
    assert_eq!(code(&env.run(&["backup", "--incr"])), 0);
    assert_eq!(code(&env.run(&["replicate", "--to", "s3"])), 0);
    let incr = sets_on(&env.repo(), "_INCR_").pop().unwrap();
    assert_eq!(
        locked_days(&object(&incr)),
        70,
        "40 days kept, 30 of margin"
    );
    let out = env.run(&["status"]);
    let text = stdout(&out);
    assert!(!text.contains("keeps no older versions"), "{text}");

    // A repair killed once the server has made the locked version current again, before
    // darvault proved it: the copy is whole, and the next audit proves it so.
    let put = s3_status(&["-X", "PUT", "--data-binary", "ransom", &object(&incr)]);
    assert_eq!(put, "200");
    assert_eq!(audit(&env, &["s3"]).0, 4);
    env.killed_at_point("brought-back:1", &["audit", "s3", "--repair"]);
    let (code, report) = audit(&env, &["s3"]);
    assert_eq!(code, 0, "{report}");
}

/// The ransomware drill on a bucket with object lock, with darvault's own keys: every file of
/// a set is uploaded locked; a slice deleted (a delete marker) and another overwritten are
/// named by an audit and healed from the bucket's own history by the server (nothing of the
/// set downloaded), which a fresh download then proves; the server refuses to delete a locked
/// version. A copy asking for object lock on a bucket without it is refused with the reason.
#[test]
fn a_locked_bucket_is_healed_from_its_own_history() {
    let env = Env::new();
    let s = servers();
    let bucket = locked_bucket("locked");
    let lock = "object_lock = \"compliance\"\nlock_retention = \"2d\"\n";
    let (s3, _) = destination("s3", "locked", lock);
    let s3 = s3.replace(
        &format!("bucket = {:?}", s["S3_BUCKET"]),
        &format!("bucket = {bucket:?}"),
    );
    repository_and_usb(&env, &s3);
    let prefix = format!("locked-{}", std::process::id());
    let full = full_on(&env.repo());
    let n = name_of(&full);
    let object = |slice: u32| {
        format!(
            "{}/{bucket}/{prefix}/docs/{n}/{n}.{slice}.dar",
            s["S3_ENDPOINT"]
        )
    };
    let head = stdout(&curl_s3(&["-I", &object(1)])).to_lowercase();
    assert!(
        head.contains("x-amz-object-lock-mode: compliance"),
        "uploaded locked: {head}"
    );

    // With this machine's keys: one slice overwritten, another deleted.
    let put = s3_status(&[
        "-X",
        "PUT",
        "--data-binary",
        "encrypted by ransomware",
        &object(1),
    ]);
    assert_eq!(put, "200", "an overwrite makes a new version");
    let delete = s3_status(&["-X", "DELETE", &object(2)]);
    assert_eq!(delete, "204", "a delete leaves a marker");
    // And a whole set deleted, object by object, after writing cleanup's record into it
    // (as if darvault had removed it: not believed of a set this machine sent there).
    let diff = name_of(&sets_on(&env.repo(), "_DIFF_")[0]);
    let record = format!(
        "{}/{bucket}/{prefix}/docs/{diff}/.darvault-removing",
        s["S3_ENDPOINT"]
    );
    let put = s3_status(&["-X", "PUT", "--data-binary", "removed", &record]);
    assert_eq!(put, "200");
    let deleted = rclone_s3_in(&bucket, &["delete", &format!("t:{prefix}/docs/{diff}")])
        .status()
        .unwrap();
    assert!(deleted.success());
    // Deleting a locked version itself is refused by the server.
    let versions = stdout(&curl_s3(&[&format!(
        "{}/{bucket}?prefix={prefix}%2Fdocs%2F{n}%2F{n}.1.dar&versions=",
        s["S3_ENDPOINT"]
    )]));
    let older: Vec<String> =
        regex::Regex::new("<VersionId>([^<]+)</VersionId><IsLatest>false</IsLatest>")
            .unwrap()
            .captures_iter(&versions)
            .map(|c| c[1].to_owned())
            .collect();
    assert_eq!(
        older.len(),
        1,
        "the locked version under the new one: {versions}"
    );
    let refused = s3_status(&[
        "-X",
        "DELETE",
        &format!("{}?versionId={}", object(1), older[0]),
    ]);
    assert_eq!(refused, "403", "a locked version cannot be deleted");

    // A restore from the attacked copy reads what the bucket's history keeps, and leaves
    // the copy as it is.
    let target = env.path("restored");
    let out = env.run(&[
        "restore",
        "-d",
        "docs",
        "--from",
        "s3",
        "--target",
        &target.display().to_string(),
    ]);
    assert_eq!(common::code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("read from an older version"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(target.join("media/clip.mp4")).unwrap(),
        fs::read(env.path("src/media/clip.mp4")).unwrap()
    );

    let (code, report) = audit(&env, &["s3"]);
    assert_eq!(code, 4, "{report}");
    let text = report.to_string();
    for slice in [1, 2] {
        assert!(text.contains(&format!("{n}.{slice}.dar")), "{report}");
    }
    assert!(
        text.contains(&diff) && text.contains("deleted: the copy keeps its older versions"),
        "{report}"
    );
    assert!(
        text.contains("not downloaded"),
        "the overwritten slice's size says enough: {report}"
    );
    let (code, report) = audit(&env, &["s3", "--repair"]);
    assert_eq!(code, 0, "{report}");
    let text = report.to_string();
    assert_eq!(
        text.matches("its own older version ").count(),
        2,
        "healed from the bucket's history: {report}"
    );
    assert!(
        text.contains("its own older versions ("),
        "the deleted set brought back: {report}"
    );
    let downloaded = report["copies"][0]["proof"]["bytes_downloaded"]
        .as_u64()
        .unwrap();
    assert!(
        downloaded < 64 << 10,
        "nothing of the set read: {downloaded}"
    );
    let fresh = env.path("fresh");
    download_s3_from(&bucket, &format!("{prefix}/docs/{n}"), &fresh);
    sha256sum_check(&fresh);
    let fresh_diff = env.path("fresh-diff");
    download_s3_from(&bucket, &format!("{prefix}/docs/{diff}"), &fresh_diff);
    sha256sum_check(&fresh_diff);

    // Retention on a locked copy: cleanup removes a set (delete markers; the locked
    // versions stay until their retention ends), and an audit leaves a set darvault removed
    // as it is.
    write(&env.path("src/plain.txt"), b"changed again\n");
    assert_eq!(common::code(&env.run(&["backup", "--diff"])), 0);
    env.config(&format!(
        "{}[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n\n{s3}keep = {{ full = \"forever\", diff = \"0d\", incr = \"0d\" }}\n",
        definition(&env),
        env.path("usb").display().to_string()
    ));
    assert_eq!(common::code(&env.run(&["replicate"])), 0);
    let out = env.run(&["cleanup", "--yes"]);
    assert_eq!(common::code(&out), 0, "{}", stderr(&out));
    let (code, report) = audit(&env, &["s3", "--repair"]);
    assert_eq!(code, 0, "{report}");
    let on_s3: Vec<&str> = report["copies"][0]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["set"].as_str().unwrap())
        .collect();
    assert!(
        !on_s3.contains(&diff.as_str()) && on_s3.len() == 2,
        "removed by cleanup, not brought back: {report}"
    );

    // Object lock asked of a bucket without it: refused, with the reason.
    let (plain, _) = destination("s3", "unlocked", lock);
    env.config(&format!("{}{plain}", definition(&env)));
    let out = env.run(&["replicate"]);
    assert_ne!(common::code(&out), 0);
    assert!(
        stderr(&out).contains("does not have object lock enabled"),
        "{}",
        stderr(&out)
    );
}

/// The read budget: an S3 copy the server vouches for is also read back at rest, least
/// recently read first, within the month's budget; successive audits read different files,
/// and `status` shows when the least recently read byte was read, and warns when the budget
/// cannot read the whole copy as often as asked.
#[test]
fn a_read_budget_reads_back_the_least_recently_read_first() {
    let env = Env::new();
    let budget: u64 = 300 << 10;
    let (s3, _) = destination(
        "s3",
        "budget",
        "read_budget = \"300K\"\nread_every = \"1m\"\n",
    );
    repository_and_usb(&env, &s3);
    let db = rusqlite::Connection::open(env.path("home/.local/state/darvault/state.db")).unwrap();
    let read_back = |db: &rusqlite::Connection| -> Vec<String> {
        let mut q = db
            .prepare("SELECT set_name || '/' || path FROM read_back WHERE copy = 's3' AND size > 0")
            .unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let downloaded =
        |report: &serde_json::Value| report["copies"][0]["proof"]["bytes_downloaded"].as_u64();
    let ago = |days: i64| {
        (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(days * 24)).to_string()
    };
    // Files sent within the month are not read back yet (the server checked them as it
    // received them): these were sent two months ago.
    db.execute("UPDATE replicated_file SET sent_at = ?1", [ago(62)])
        .unwrap();

    let (code, report) = audit(&env, &["s3"]);
    assert_eq!(code, 0, "{report}");
    let first = read_back(&db);
    assert!(!first.is_empty(), "{report}");
    let read = downloaded(&report).unwrap();
    assert!(
        read > 128 << 10 && read <= budget + (64 << 10),
        "within the budget: {read}"
    );
    // Within the same month, nothing is left of the budget.
    let (code, report) = audit(&env, &["s3"]);
    assert_eq!(code, 0, "{report}");
    assert!(downloaded(&report).unwrap() < 64 << 10, "{report}");
    assert_eq!(read_back(&db), first);

    // A month later: the files never read back go first (then, with room left, the least
    // recently read).
    db.execute("UPDATE read_back SET read_at = ?1", [ago(31)])
        .unwrap();
    db.execute("UPDATE read_log SET read_at = ?1", [ago(31)])
        .unwrap();
    let (code, report) = audit(&env, &["s3"]);
    assert_eq!(code, 0, "{report}");
    let second: Vec<String> = read_back(&db)
        .into_iter()
        .filter(|f| !first.contains(f))
        .collect();
    assert!(!second.is_empty(), "{report}");
    let read = downloaded(&report).unwrap();
    assert!(read <= budget + (64 << 10), "within the budget: {read}");

    let out = env.run(&["status"]);
    let text = stdout(&out);
    assert!(
        text.contains("least recently read byte: 62 day(s) ago"),
        "{text}"
    );
    assert!(text.contains("warning: read_budget"), "{text}");
    assert!(
        text.contains("warning: the bucket keeps no older versions"),
        "{text}"
    );
    let out = env.run(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s3 = status["copies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "s3")
        .unwrap();
    assert_eq!(s3["read_back"]["budget_per_month"], budget, "{s3}");
    assert_eq!(s3["keeps_versions"], false, "{s3}");
}
