//! The command line's own surface: help with exit codes, completions, the manual page.

mod common;

use std::process::Command;

fn darvault(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_darvault"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn help_documents_the_exit_codes() {
    let (code, text) = darvault(&["--help"]);
    assert_eq!(code, 0);
    for line in [
        "0    everything done",
        "4    an audit found damage",
        "7    another darvault run",
    ] {
        assert!(text.contains(line), "{line:?} missing from --help");
    }
}

#[test]
fn the_manual_page_is_generated() {
    let (code, man) = darvault(&["man"]);
    assert_eq!(code, 0);
    assert!(man.contains(".TH darvault") && man.contains("audit"));
}

#[test]
fn bash_completes_commands_options_and_the_users_own_names() {
    let env = common::Env::new();
    env.config(&format!(
        "[[definition]]\nname = \"photos\"\nsource = {:?}\n\n[[definition]]\nname = \"docs\"\nsource = {:?}\n\n[[destination]]\nname = \"usb-disk\"\nkind = \"fs\"\nroot = {:?}\n",
        env.path("src").display().to_string(),
        env.path("src").display().to_string(),
        env.path("usb").display().to_string()
    ));
    common::write(&env.path("src/a.txt"), b"a\n");
    assert_eq!(common::code(&env.run(&["backup", "--full"])), 0);
    let set = common::name_of(&env.sets("photos")[0]);
    let docs_set = common::name_of(&env.sets("docs")[0]);
    // Another config, named on the line being completed.
    let other = env.path("other.toml");
    std::fs::write(
        &other,
        format!(
            "repository = {:?}\n[[definition]]\nname = \"music\"\nsource = \"/srv/music\"\n",
            env.path("other-repo").display().to_string()
        ),
    )
    .unwrap();

    let (code, script) = darvault(&["completions", "bash"]);
    assert_eq!(code, 0);
    let script_file = env.path("darvault.bash");
    std::fs::write(&script_file, script).unwrap();
    // What bash does on <TAB>: the registered function fills COMPREPLY.
    let complete = |words: &[&str]| -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let program = format!(
            "source {}; complete -p darvault >/dev/null || exit 9; COMP_WORDS=({}); COMP_CWORD={}; COMP_TYPE=9; _clap_complete_darvault darvault '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script_file.display(),
            quoted.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2]
        );
        let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_darvault"))
            .parent()
            .unwrap();
        let out = Command::new("bash")
            .args(["-c", &program])
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env("DARVAULT_CONFIG", env.path("config.toml"))
            .env("HOME", env.path("home"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(complete(&["darvault", "repl"]), ["replicate"]);
    assert!(complete(&["darvault", "restore", "--as"]).contains(&"--as-of".to_owned()));
    assert_eq!(
        complete(&["darvault", "backup", "-d", ""]),
        ["photos", "docs"]
    );
    let other = other.display().to_string();
    assert_eq!(
        complete(&["darvault", "--config", &other, "backup", "-d", ""]),
        ["music"]
    );
    // Set names follow the definition on the line.
    assert_eq!(
        complete(&["darvault", "cleanup", "-d", "docs", "--set", ""]),
        [docs_set]
    );
    // A copy: a destination, the repository, or a folder.
    assert_eq!(
        complete(&["darvault", "restore", "--from", "usb-"]),
        ["usb-disk"]
    );
    assert!(complete(&["darvault", "restore", "--from", "rep"]).contains(&"repository".to_owned()));
    std::fs::create_dir_all(env.path("drawer-disk")).unwrap();
    let folder = env.path("drawer-d").display().to_string();
    assert!(
        complete(&["darvault", "audit", &folder])
            .iter()
            .any(|c| c.ends_with("drawer-disk/")),
        "folders complete"
    );
    assert_eq!(
        complete(&["darvault", "replicate", "--to", "usb"]),
        ["usb-disk"]
    );
    assert_eq!(
        complete(&["darvault", "cleanup", "--set", "photos_"]),
        [set]
    );
}

/// A reader that goes away ends darvault quietly with exit 0, as other Unix tools do.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} man | head -c 10 >/dev/null",
            env!("CARGO_BIN_EXE_darvault")
        ))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// Silent no-ops and needless flags: a set name that matches nothing is said (exit 2); a
/// config with one definition needs no -d to restore; a log piped to a file has no colours.
#[test]
fn mistakes_are_said_and_needless_flags_are_not_needed() {
    let env = common::Env::new();
    env.config(&format!(
        "[[definition]]\nname = \"photos\"\nsource = {:?}\n",
        env.path("src").display().to_string()
    ));
    common::write(&env.path("src/a.txt"), b"a\n");
    assert_eq!(common::code(&env.run(&["backup", "--full"])), 0);
    let out = env.run(&["cleanup", "--set", "photos_FULL_1999-01-01_000000"]);
    assert_eq!(common::code(&out), 2);
    assert!(
        common::stderr(&out).contains("no set named"),
        "{}",
        common::stderr(&out)
    );
    let target = env.path("restored");
    let out = env.run(&["restore", "--target", &target.display().to_string()]);
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"a\n");
    let out = env.run(&["backup", "--diff", "-d", "nosuch"]);
    assert!(
        !common::stderr(&out).contains('\x1b'),
        "colours in a pipe: {}",
        common::stderr(&out)
    );

    // Without a config, a path named where a copy is expected is named with what is wrong
    // with it (not "no config file").
    let file = env.path("src/a.txt").display().to_string();
    let missing = env.path("nowhere").display().to_string();
    for (named, wrong) in [
        (&file, "is a file, not a folder"),
        (&missing, "no such folder"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_darvault"))
            .env("HOME", env.path("home"))
            .env("XDG_CONFIG_HOME", env.path("no-config"))
            .env("XDG_STATE_HOME", env.path("home/.local/state"))
            .args(["audit", named])
            .output()
            .unwrap();
        let said = common::stderr(&out);
        assert_eq!(common::code(&out), 2, "{said}");
        assert!(
            said.contains(named.as_str()) && said.contains(wrong),
            "{said}"
        );
    }
}
