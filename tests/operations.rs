//! Unattended operation: retention, notifications, systemd units, status and completions.

mod common;

use std::fs;

use common::*;

fn definition(env: &Env, extra: &str) {
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\n{extra}",
        env.path("src").display().to_string()
    ));
}

#[test]
fn cleanup_keeps_the_policy_and_every_dependency_and_asks_before_a_full() {
    let env = Env::new();
    awkward_tree(&env.path("src"));
    // Everything expires at once: only chains and confirmations keep sets.
    let keep = "[definition.keep]\nfull = \"0d\"\ndiff = \"0d\"\nincr = \"0d\"\n";
    definition(&env, keep);
    for level in ["--full", "--diff", "--full", "--incr"] {
        assert_eq!(code(&env.run(&["backup", level])), 0);
    }
    let before = env.sets("docs");
    let names: Vec<String> = before.iter().map(|p| name_of(p)).collect();
    // A stray par2 leftover and a staging folder of an interrupted run.
    fs::write(before[3].join("SHA256SUMS.1"), b"junk").unwrap();
    let par2_leftover = before[3].join(format!("{}.1.dar.1", names[3]));
    fs::write(&par2_leftover, b"junk").unwrap();
    fs::create_dir_all(env.repo().join("docs/.staging.docs_FULL_x")).unwrap();

    // Dry run: says what would go and frees, changes nothing.
    let out = env.run(&["--json", "cleanup", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removals = report["copies"][0]["removals"].as_array().unwrap();
    let planned: Vec<&str> = removals
        .iter()
        .map(|r| r["set"].as_str().unwrap())
        .collect();
    assert_eq!(planned, [names[0].as_str(), names[1].as_str()]);
    assert_eq!(env.sets("docs"), before);
    assert!(par2_leftover.exists());

    // No terminal and no --yes: the DIFF goes, the old FULL stays (refused, said why).
    let out = env.run(&["cleanup"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("--yes"), "{}", stdout(&out));
    let after: Vec<String> = env.sets("docs").iter().map(|p| name_of(p)).collect();
    assert_eq!(
        after,
        [names[0].clone(), names[2].clone(), names[3].clone()]
    );
    assert!(!env.repo().join("docs").join(&names[1]).exists());
    assert!(!par2_leftover.exists());
    assert!(
        before[3].join("SHA256SUMS").exists(),
        "only par2 leftovers of manifest files"
    );
    assert!(!env.repo().join("docs/.staging.docs_FULL_x").exists());

    // Named, but needed: the newest FULL stays while its INCR does.
    let out = env.run(&["--json", "cleanup", "--yes", "--set", &names[2]]);
    assert_eq!(code(&out), 0);
    let after: Vec<String> = env.sets("docs").iter().map(|p| name_of(p)).collect();
    assert_eq!(
        after,
        [names[2].clone(), names[3].clone()],
        "old FULL gone with --yes"
    );

    // The remaining chain still restores.
    let target = env.path("restored");
    let out = env.run(&[
        "restore",
        "-d",
        "docs",
        "--target",
        &target.display().to_string(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn the_repository_keeps_what_a_destination_has_not_received_and_destinations_keep_their_own_policy()
{
    let env = Env::new();
    awkward_tree(&env.path("src"));
    let usb = env.path("usb");
    let keep = "[definition.keep]\nfull = \"0d\"\ndiff = \"0d\"\nincr = \"0d\"\n";
    let dest = format!(
        "\n[[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\nkeep = {{ full = \"forever\", diff = \"0d\", incr = \"0d\" }}\n",
        usb.display().to_string()
    );
    definition(&env, &format!("{keep}{dest}"));
    for level in ["--full", "--diff", "--diff"] {
        assert_eq!(code(&env.run(&["backup", level])), 0);
    }
    let names: Vec<String> = env.sets("docs").iter().map(|p| name_of(p)).collect();
    // Not replicated yet: the repository keeps the first DIFF.
    let out = env.run(&["cleanup", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("not yet replicated to usb"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.sets("docs").len(), 3);

    assert_eq!(code(&env.run(&["replicate"])), 0);
    let out = env.run(&["cleanup", "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let on_repo: Vec<String> = env.sets("docs").iter().map(|p| name_of(p)).collect();
    assert_eq!(
        on_repo,
        [names[0].clone(), names[2].clone()],
        "FULL kept: the newest DIFF needs it"
    );
    let on_usb: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(usb.join("docs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut expected = [names[0].clone(), names[2].clone()];
    expected.sort();
    assert_eq!(on_usb, expected, "the first DIFF is gone from the disk too");

    // Only the destination: a policy is required there.
    let out = env.run(&["cleanup", "--dest", "nowhere"]);
    assert_eq!(code(&out), 2);
}
