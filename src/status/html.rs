//! The status as one self-contained HTML page (no script, no external file): tables and three
//! SVG plots — archive size per set over time, backup durations per phase, and how long ago
//! each copy was last proven.

use std::fmt::Write;

use super::{CopyStatus, DefinitionStatus, Status};
use crate::config::human_bytes;

const LEVEL_COLOURS: [(&str, &str); 3] = [
    ("FULL", "#1f5f99"),
    ("DIFF", "#4c9f70"),
    ("INCR", "#d9a441"),
];
const PHASE_COLOURS: [&str; 6] = [
    "#1f5f99", "#4c9f70", "#d9a441", "#b5525c", "#7a5fa8", "#5d7380",
];

pub fn render(status: &Status) -> String {
    let mut body = String::new();
    rules(&mut body, &status.rules);
    for d in &status.definitions {
        definition(&mut body, d);
    }
    copies(&mut body, &status.copies, status.generated);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>darvault status — {host}</title><style>{STYLE}</style></head><body>\
         <h1>darvault status</h1><p class=\"meta\">{host}, {when}</p>{body}</body></html>\n",
        host = esc(&status.host),
        when = status.generated.strftime("%Y-%m-%d %H:%M UTC"),
    )
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;padding:0 1.5em;max-width:1100px;\
color:#222}h1{margin-bottom:0}.meta{color:#666}table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}.bad{color:#b00020;\
font-weight:600}.ok{color:#2e7d32}svg{display:block;margin:.5em 0 1.5em}text{font-size:12px}";

/// A badge per definition: its backup rule, each part, whether it holds.
fn rules(out: &mut String, rules: &[super::rule::RuleStatus]) {
    out.push_str("<h2>Is the data safe?</h2><table><tr><th>definition</th><th>rule</th><th>copies</th><th>media</th><th>offsite</th><th>offline or immutable</th><th>errors</th></tr>");
    for r in rules {
        let (class, mark) = if r.holds {
            ("ok", "✓")
        } else {
            ("bad", "✗")
        };
        let part = |p: super::rule::Part| {
            let class = if p.holds() { "ok" } else { "bad" };
            format!("<td class=\"{class}\">{}/{}</td>", p.have, p.need)
        };
        let errors_class = if r.errors.have <= r.errors.need {
            "ok"
        } else {
            "bad"
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{class}\">{} {mark}</td>{}{}{}{}<td class=\"{errors_class}\">{}</td></tr>",
            esc(&r.definition),
            r.rule,
            part(r.copies),
            part(r.media),
            part(r.offsite),
            part(r.offline_or_immutable),
            r.errors.have
        );
    }
    out.push_str("</table>");
}

fn definition(out: &mut String, d: &DefinitionStatus) {
    let _ = write!(
        out,
        "<h2>Definition {}</h2><table><tr><th>level</th><th>last run</th>\
        <th>outcome</th><th>took</th><th>size</th></tr>",
        esc(&d.name)
    );
    for (level, run) in d.last_in_chain_order() {
        let class = match run.outcome {
            crate::state::RunOutcome::Failed => "bad",
            _ => "ok",
        };
        let _ = write!(
            out,
            "<tr><td>{level}</td><td>{}</td><td class=\"{class}\">{}</td><td>{:.1} s</td><td>{}</td></tr>",
            run.started_at.strftime("%Y-%m-%d %H:%M"),
            esc(run.outcome.as_str()),
            run.seconds,
            human_bytes(run.bytes)
        );
    }
    out.push_str("</table>");
    if let Some(f) = &d.last_failure {
        let _ = write!(
            out,
            "<p class=\"bad\">Last failure: {} ({})</p>",
            f.started_at.strftime("%Y-%m-%d %H:%M"),
            esc(f
                .details
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or(""))
        );
    }
    out.push_str("<h3>Archive size per set</h3>");
    size_plot(out, d);
    out.push_str(
        "<h3>Backup duration per phase</h3><p class=\"meta\">Phases overlap in time (slices are \
         hashed and given PAR2 while dar writes): a bar shows the work each phase did, the \
         figure after it how long the run took.</p>",
    );
    phase_plot(out, d);
}

/// Bars of set sizes in order of creation, coloured by level.
fn size_plot(out: &mut String, d: &DefinitionStatus) {
    let (w, h, left, bottom) = (1000.0, 220.0, 70.0, 40.0);
    let max = d.sets.iter().map(|s| s.bytes).max().unwrap_or(1).max(1) as f64;
    let n = d.sets.len().max(1) as f64;
    let bar = ((w - left - 10.0) / n).min(40.0);
    let _ = write!(
        out,
        "<svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"archive size per set\">"
    );
    axis(out, left, h - bottom, w, &human_bytes(max as u64));
    for (i, s) in d.sets.iter().enumerate() {
        let bh = (s.bytes as f64 / max) * (h - bottom - 20.0);
        let x = left + 5.0 + i as f64 * bar;
        let colour = LEVEL_COLOURS
            .iter()
            .find(|(l, _)| *l == s.level)
            .map_or("#888", |(_, c)| c);
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{colour}\"><title>{} — {}</title></rect>",
            h - bottom - bh,
            (bar - 2.0).max(1.0),
            esc(&s.set),
            human_bytes(s.bytes)
        );
    }
    if let (Some(first), Some(last)) = (d.sets.first(), d.sets.last()) {
        let _ = write!(
            out,
            "<text x=\"{left}\" y=\"{:.0}\">{}</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>",
            h - bottom + 16.0,
            first.created.strftime("%Y-%m-%d"),
            w - 10.0,
            h - bottom + 16.0,
            last.created.strftime("%Y-%m-%d")
        );
    }
    for (i, (level, colour)) in LEVEL_COLOURS.iter().enumerate() {
        let x = left + i as f64 * 80.0;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{:.0}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{:.0}\" y=\"{:.0}\">{level}</text>",
            h - 14.0,
            x + 14.0,
            h - 5.0
        );
    }
    out.push_str("</svg>");
}

/// One stacked bar per backup run: how long each phase took (phases overlap in time; the
/// bar shows the work each did).
fn phase_plot(out: &mut String, d: &DefinitionStatus) {
    let runs: Vec<(&crate::state::Run, Vec<(String, f64)>)> = d
        .history
        .iter()
        .filter_map(|r| {
            let phases = r.details.get("phases")?.as_array()?;
            let parsed: Vec<(String, f64)> = phases
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_str()?.to_owned(), p.get(1)?.as_f64()?)))
                .collect();
            Some((r, parsed))
        })
        .collect();
    let mut names: Vec<String> = Vec::new();
    for (_, phases) in &runs {
        for (name, _) in phases {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let (w, row, left) = (1000.0, 18.0, 190.0);
    let h = 40.0 + row * runs.len().max(1) as f64 + 20.0 * names.len().div_ceil(3) as f64;
    let max = runs
        .iter()
        .map(|(_, p)| p.iter().map(|(_, s)| s).sum::<f64>())
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let _ = write!(
        out,
        "<svg width=\"{w}\" height=\"{h:.0}\" role=\"img\" aria-label=\"backup duration per phase\">"
    );
    for (i, (run, phases)) in runs.iter().enumerate() {
        let y = 10.0 + i as f64 * row;
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{:.0}\">{} {}</text>",
            y + 12.0,
            run.started_at.strftime("%Y-%m-%d %H:%M"),
            run.level.as_deref().unwrap_or("")
        );
        let mut x = left;
        for (name, secs) in phases {
            let bw = secs / max * (w - left - 60.0);
            let colour = PHASE_COLOURS
                [names.iter().position(|n| n == name).unwrap_or(0) % PHASE_COLOURS.len()];
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.0}\" width=\"{bw:.1}\" height=\"{:.0}\" fill=\"{colour}\"><title>{}: {secs:.2} s</title></rect>",
                row - 4.0,
                esc(name)
            );
            x += bw;
        }
        let _ = write!(
            out,
            "<text x=\"{:.0}\" y=\"{:.0}\">{:.1} s</text>",
            x + 4.0,
            y + 12.0,
            run.seconds
        );
    }
    let legend_y = 30.0 + row * runs.len().max(1) as f64;
    for (i, name) in names.iter().enumerate() {
        let (x, y) = (
            left + (i % 3) as f64 * 260.0,
            legend_y + (i / 3) as f64 * 20.0,
        );
        let colour = PHASE_COLOURS[i % PHASE_COLOURS.len()];
        let _ = write!(
            out,
            "<rect x=\"{x:.0}\" y=\"{:.0}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{:.0}\" y=\"{y:.0}\">{}</text>",
            y - 9.0,
            x + 14.0,
            esc(name)
        );
    }
    out.push_str("</svg>");
}

fn copies(out: &mut String, copies: &[CopyStatus], now: jiff::Timestamp) {
    out.push_str(
        "<h2>Copies</h2><table><tr><th>copy</th><th>kind</th><th>sets</th><th>size</th>\
        <th>missing</th><th>never proven</th><th>oldest proof</th><th>free</th></tr>",
    );
    for c in copies {
        if let Some(e) = &c.error {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td colspan=\"6\" class=\"bad\">{}</td></tr>",
                esc(&c.name),
                esc(&c.kind),
                esc(e)
            );
            continue;
        }
        let bad = |n: usize| if n > 0 { "bad" } else { "ok" };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.name),
            esc(&c.kind),
            c.sets,
            human_bytes(c.bytes),
            bad(c.missing.len()),
            c.missing.len(),
            bad(c.never_proven.len()),
            c.never_proven.len(),
            c.oldest_proof.as_ref().map_or("—".into(), |(s, t)| format!(
                "{} ({})",
                t.strftime("%Y-%m-%d"),
                esc(s)
            )),
            c.free_bytes.map_or("—".into(), human_bytes)
        );
    }
    out.push_str("</table><h3>Days since each copy's oldest proof</h3>");
    let (w, row, left) = (1000.0, 22.0, 260.0);
    let ages: Vec<(&str, Option<f64>)> = copies
        .iter()
        .map(|c| {
            let age = match (&c.oldest_proof, c.never_proven.is_empty()) {
                (Some((_, t)), true) => Some((now - *t).as_secs_f64() / 86400.0),
                _ => None,
            };
            (c.name.as_str(), age)
        })
        .collect();
    let max = ages.iter().filter_map(|(_, a)| *a).fold(31.0_f64, f64::max);
    let _ = write!(
        out,
        "<svg width=\"{w}\" height=\"{:.0}\" role=\"img\" aria-label=\"verification age per copy\">",
        10.0 + row * ages.len() as f64
    );
    for (i, (name, age)) in ages.iter().enumerate() {
        let y = 5.0 + i as f64 * row;
        let short: String = name
            .chars()
            .rev()
            .take(36)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{:.0}\">{}</text>",
            y + 13.0,
            esc(&short)
        );
        match age {
            Some(days) => {
                let bw = (days / max * (w - left - 80.0)).max(2.0);
                let colour = if *days > 31.0 { "#b5525c" } else { "#4c9f70" };
                let _ = write!(
                    out,
                    "<rect x=\"{left}\" y=\"{y:.0}\" width=\"{bw:.1}\" height=\"16\" fill=\"{colour}\"/><text x=\"{:.0}\" y=\"{:.0}\">{days:.1} d</text>",
                    left + bw + 4.0,
                    y + 13.0
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<text x=\"{left}\" y=\"{:.0}\" class=\"bad\" fill=\"#b00020\">not every set proven yet</text>",
                    y + 13.0
                );
            }
        }
    }
    out.push_str("</svg>");
}

fn axis(out: &mut String, left: f64, base: f64, w: f64, top_label: &str) {
    let _ = write!(
        out,
        "<line x1=\"{left}\" y1=\"{base}\" x2=\"{:.0}\" y2=\"{base}\" stroke=\"#999\"/><line x1=\"{left}\" y1=\"20\" x2=\"{left}\" y2=\"{base}\" stroke=\"#999\"/><text x=\"{:.0}\" y=\"24\" text-anchor=\"end\">{top_label}</text>",
        w - 10.0,
        left - 4.0
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
