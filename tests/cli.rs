//! The command line's own surface: help with exit codes, completions, the manual page.

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
fn completions_and_the_manual_page_are_generated() {
    let (code, bash) = darvault(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(bash.contains("_darvault") && bash.contains("replicate") && bash.contains("--as-of"));
    // bash accepts the script.
    let status = Command::new("bash")
        .args(["-n", "-c", &bash])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, man) = darvault(&["man"]);
    assert_eq!(code, 0);
    assert!(man.contains(".TH darvault") && man.contains("audit"));
}
