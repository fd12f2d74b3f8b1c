//! The status as a node_exporter textfile (Prometheus exposition format), written atomically
//! so the collector never reads half a file.

use std::fmt::Write;

use super::Status;

/// Per definition whether its rule holds, and each part's have and need.
type Rows = Vec<(String, f64)>;

fn rule_rows(status: &Status) -> (Rows, Rows) {
    let mut holds = Vec::new();
    let mut parts = Vec::new();
    for r in &status.rules {
        let definition = escape(&r.definition);
        holds.push((
            format!("definition=\"{definition}\""),
            f64::from(u8::from(r.holds)),
        ));
        for (part, p) in [
            ("copies", r.copies),
            ("media", r.media),
            ("offsite", r.offsite),
            ("offline_or_immutable", r.offline_or_immutable),
            ("errors", r.errors),
        ] {
            let labels = format!("definition=\"{definition}\",part=\"{part}\"");
            parts.push((format!("{labels},of=\"have\""), f64::from(p.have)));
            parts.push((format!("{labels},of=\"need\""), f64::from(p.need)));
        }
    }
    (holds, parts)
}

pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(
            out,
            "# HELP darvault_{name} {help}\n# TYPE darvault_{name} gauge"
        );
        for (labels, value) in rows {
            let _ = writeln!(out, "darvault_{name}{{{labels}}} {value}");
        }
    };
    let (holds, parts) = rule_rows(status);
    metric(
        "rule_holds",
        "1 when the definition's backup rule (3-2-1-1-0) holds.",
        holds,
    );
    metric(
        "rule_part",
        "Each part of the backup rule: what the copies give (have) and what the rule asks (need; errors: the most allowed).",
        parts,
    );
    let mut last_time = Vec::new();
    let mut last_ok = Vec::new();
    let mut seconds = Vec::new();
    let mut bytes = Vec::new();
    for d in &status.definitions {
        for (level, run) in &d.last {
            let labels = format!("definition=\"{}\",level=\"{level}\"", d.name);
            last_time.push((labels.clone(), run.started_at.as_second() as f64));
            let ok = run.outcome != crate::state::RunOutcome::Failed;
            last_ok.push((labels.clone(), f64::from(u8::from(ok))));
            seconds.push((labels.clone(), run.seconds));
            bytes.push((labels, run.bytes as f64));
        }
    }
    metric(
        "backup_last_run_timestamp_seconds",
        "When the last backup of this level started.",
        last_time,
    );
    metric(
        "backup_last_run_success",
        "1 when the last backup of this level published its set.",
        last_ok,
    );
    metric(
        "backup_last_run_duration_seconds",
        "How long the last backup of this level took.",
        seconds,
    );
    metric(
        "backup_last_set_bytes",
        "Size of the set the last backup of this level made.",
        bytes,
    );
    let copy = |f: &dyn Fn(&super::CopyStatus) -> Option<f64>| -> Vec<(String, f64)> {
        status
            .copies
            .iter()
            .filter_map(|c| {
                f(c).map(|v| {
                    (
                        format!("copy=\"{}\",kind=\"{}\"", escape(&c.name), c.kind),
                        v,
                    )
                })
            })
            .collect()
    };
    metric(
        "copy_up",
        "1 when the copy could be read.",
        copy(&|c| Some(f64::from(u8::from(c.error.is_none())))),
    );
    metric(
        "copy_sets",
        "Sets the copy holds.",
        copy(&|c| Some(c.sets as f64)),
    );
    metric(
        "copy_bytes",
        "Bytes of sets the copy holds.",
        copy(&|c| Some(c.bytes as f64)),
    );
    metric(
        "copy_missing_sets",
        "Sets of the repository the copy lacks.",
        copy(&|c| Some(c.missing.len() as f64)),
    );
    metric(
        "copy_unproven_sets",
        "Sets on the copy that no audit has proven there.",
        copy(&|c| Some(c.never_proven.len() as f64)),
    );
    metric(
        "copy_oldest_proof_timestamp_seconds",
        "When the set proven longest ago on the copy was proven.",
        copy(&|c| c.oldest_proof.as_ref().map(|(_, t)| t.as_second() as f64)),
    );
    metric(
        "copy_least_recently_read_timestamp_seconds",
        "With a read budget: when the byte of the copy read back least recently was read (or sent).",
        copy(&|c| {
            let read = c.read_back.as_ref()?.least_recently_read?;
            Some(read.as_second() as f64)
        }),
    );
    metric(
        "copy_free_bytes",
        "Free space where the copy is (local copies).",
        copy(&|c| c.free_bytes.map(|b| b as f64)),
    );
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
