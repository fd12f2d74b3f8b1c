//! Snapshots of what users read: the text and the JSON of list, status, audit, restore and
//! cleanup over one small, fixed story (a FULL and a DIFF, a USB copy, bitrot found and
//! repaired, a restore, retention), compared with `tests/snapshots/`. A wording change then
//! shows in review as a changed snapshot, never by accident. What changes from run to run
//! (times, durations, sizes, hashes, the temporary folder) is replaced by a placeholder.
//!
//! To accept new output: `DARVAULT_UPDATE_SNAPSHOTS=1 cargo test --test reports`, then review
//! the diff of tests/snapshots/.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// The placeholders, most specific first.
fn redact(text: &str, tmp: &Path) -> String {
    let rules: &[(&str, &str)] = &[
        (r"[0-9a-f]{64}", "[SHA256]"),
        (r"[0-9a-f]{16}…", "[SHA256]…"),
        // A set name's time, then times and dates as darvault prints them.
        (r"\d{4}-\d{2}-\d{2}_\d{6}", "[STAMP]"),
        (
            r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:\d{2}(\[[^\]]+\])?)?",
            "[TIME]",
        ),
        (r"\d+(\.\d+)? ?(B|KiB|MiB|GiB|TiB)\b", "[SIZE]"),
        (r"\b\d+ bytes\b", "[N] bytes"),
        (r"\b\d+(\.\d+)?(s|ms)\b", "[DURATION]"),
        (r"\b\d+ (day|hour|minute|second)s?\b", "[AGE]"),
        // JSON: fractions (seconds) and numbers of four digits or more (sizes, times).
        (r"(?m)(: |\[|, |^\s+)-?\d+\.\d+([eE][+-]?\d+)?", "$1[N]"),
        (r"(?m)(: |\[|, |^\s+)\d{4,}", "$1[N]"),
    ];
    // The project's folder too: where this darvault runs from (its build) names folders.
    let mut out = text
        .replace(&tmp.display().to_string(), "[TMP]")
        .replace(env!("CARGO_MANIFEST_DIR"), "[PROJECT]");
    for (pattern, with) in rules {
        out = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&out, *with)
            .into_owned();
    }
    out
}

/// Compare with (or, asked to, write) `tests/snapshots/<name>`.
fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("DARVAULT_UPDATE_SNAPSHOTS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  - {e}\n  + {a}", i + 1))
            .collect();
        panic!(
            "{} differs ({} vs {} lines); accept with DARVAULT_UPDATE_SNAPSHOTS=1 if intended:\n{}\n--- actual\n{actual}",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// The text and the JSON of one command, as a user sees them (exit code first).
fn both(env: &Env, args: &[&str]) -> String {
    let text = env.run(args);
    let mut json_args = vec!["--json"];
    json_args.extend_from_slice(args);
    let json = env.run(&json_args);
    let pretty = serde_json::from_slice::<serde_json::Value>(&json.stdout)
        .map(|v| serde_json::to_string_pretty(&v).unwrap())
        .unwrap_or_else(|_| stdout(&json));
    redact(
        &format!(
            "$ darvault {}\nexit {}\n{}\n$ darvault --json {}\nexit {}\n{}\n",
            args.join(" "),
            code(&text),
            stdout(&text),
            args.join(" "),
            code(&json),
            pretty
        ),
        env.tmp.path(),
    )
}

#[test]
fn reports_read_as_recorded() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("notes/monday.txt"), b"monday\n");
    write(&src.join("notes/tuesday.txt"), b"tuesday\n");
    write(&src.join("photo.jpg"), &vec![42u8; 300_000]);
    let usb = env.path("usb");
    env.config(&format!(
        "[[definition]]\nname = \"docs\"\nsource = {:?}\nslice_size = \"128K\"\n\n\
         [[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = {:?}\n",
        src.display().to_string(),
        usb.display().to_string()
    ));
    assert_eq!(code(&env.run(&["backup", "--full"])), 0);
    write(&src.join("notes/monday.txt"), b"monday, edited\n");
    fs::remove_file(src.join("notes/tuesday.txt")).unwrap();
    assert_eq!(code(&env.run(&["backup", "--diff"])), 0);
    assert_eq!(code(&env.run(&["replicate"])), 0);

    assert_snapshot("list.txt", &both(&env, &["list"]));

    // Bitrot on the USB copy: found, then repaired from the repository.
    let full = usb.join("docs").join(name_of(&env.sets("docs")[0]));
    let slice = full.join(format!("{}.1.dar", name_of(&full)));
    let mut bytes = fs::read(&slice).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&slice, bytes).unwrap();
    let found = env.run(&["audit", "usb"]);
    let repaired = env.run(&["--json", "audit", "usb", "--repair"]);
    let clean = both(&env, &["audit", "usb"]);
    assert_snapshot(
        "audit.txt",
        &format!(
            "{}{}{clean}",
            redact(
                &format!(
                    "$ darvault audit usb\nexit {}\n{}\n",
                    code(&found),
                    stdout(&found)
                ),
                env.tmp.path()
            ),
            redact(
                &format!(
                    "$ darvault --json audit usb --repair\nexit {}\n{}\n",
                    code(&repaired),
                    serde_json::to_string_pretty(
                        &serde_json::from_slice::<serde_json::Value>(&repaired.stdout).unwrap()
                    )
                    .unwrap()
                ),
                env.tmp.path()
            ),
        ),
    );

    let target = env.path("restored").display().to_string();
    let full_time = name_of(&env.sets("docs")[0]).replace("docs_FULL_", "");
    let listed = both(
        &env,
        &["restore", "--from", "usb", "--list", "--as-of", &full_time],
    );
    let restored = env.run(&["restore", "--from", "usb", "--target", &target, "notes"]);
    let restored = redact(
        &format!(
            "$ darvault restore --from usb --target [TARGET] notes\nexit {}\n{}",
            code(&restored),
            stdout(&restored)
        ),
        env.tmp.path(),
    );
    assert_snapshot("restore.txt", &format!("{listed}{restored}"));

    assert_snapshot("cleanup.txt", &both(&env, &["cleanup", "--dry-run"]));
    assert_snapshot("status.txt", &both(&env, &["status"]));
}
