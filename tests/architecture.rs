//! The rules of docs/architecture.md that a machine can check: the library's modules import
//! each other without a cycle (top-level modules, and files inside one module's folder), and
//! only `src/copy/` touches storage (OpenDAL).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("readable source tree"))
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| e.into_path())
        .collect()
}

/// The code of a file without its unit tests and comments: test modules may reach anywhere.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable source file");
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("//")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names that follow `prefix` in `text`: `crate::copy::Store` → `copy`,
/// `super::{check, repair::Group}` → `check`, `repair`.
fn referenced(text: &str, prefix: &str) -> BTreeSet<String> {
    let first_name = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        let rest = &text[i + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or("");
                names.extend(group.split(',').map(first_name));
            }
            None => {
                names.insert(first_name(rest));
            }
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// The first cycle found in `graph`, as the path of nodes around it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// The top-level module a file under `src/` belongs to (`src/copy/store.rs` → `copy`).
fn module_of(file: &Path, src: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main" | "cli")).then(|| name.to_owned())
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&src) {
        let Some(module) = module_of(&file, &src) else {
            continue;
        };
        let uses = referenced(&code(&file), "crate::");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(uses.into_iter().filter(|u| *u != module));
    }
    assert!(graph.len() > 10, "the module scan found {graph:?}");
    if let Some(found) = cycle(&graph) {
        panic!(
            "modules import each other in a cycle: {}",
            found.join(" -> ")
        );
    }
}

#[test]
fn files_inside_a_module_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for folder in std::fs::read_dir(&src).unwrap() {
        let folder = folder.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        // Siblings: `super::x` from a file of the folder (mod.rs itself is the parent).
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in sources(&folder) {
            let name = file.file_stem().unwrap().to_string_lossy().into_owned();
            if name == "mod" || file.parent() != Some(folder.as_path()) {
                continue;
            }
            let uses = referenced(&code(&file), "super::");
            let entry = graph.entry(name.clone()).or_default();
            entry.extend(uses.into_iter().filter(|u| *u != name));
        }
        let files: BTreeSet<String> = graph.keys().cloned().collect();
        for uses in graph.values_mut() {
            uses.retain(|u| files.contains(u));
        }
        if let Some(found) = cycle(&graph) {
            panic!(
                "files of {} import each other in a cycle: {}",
                folder.display(),
                found.join(" -> ")
            );
        }
    }
}

#[test]
fn only_the_copy_module_touches_storage() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = root.join("src/copy");
    let outside: Vec<String> = sources(&root.join("src"))
        .into_iter()
        .filter(|f| !f.starts_with(&copy))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("opendal::"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        outside.is_empty(),
        "OpenDAL used outside src/copy/: {outside:?}"
    );
}

/// Verdicts are values: no outcome is kept as text that a later step would have to read.
#[test]
fn no_outcome_is_a_string() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let as_text: Vec<String> = sources(&root.join("src"))
        .into_iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            text.lines()
                .enumerate()
                .filter(|(_, l)| {
                    // A field (a row read into a local first is fine).
                    let l = l.trim().trim_start_matches("pub ");
                    l.starts_with("outcome: String") || l.starts_with("outcome: Option<String>")
                })
                .map(|(i, _)| format!("{}:{}", f.display(), i + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(as_text.is_empty(), "outcomes kept as text: {as_text:?}");
}

/// `text` with its comments, string and character literals blanked (newlines kept), so that
/// braces and keywords left are code.
fn blank_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && {
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            chars.get(i + 1 + hashes) == Some(&'"')
                && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        } {
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let start = i + 2 + hashes;
            let rest: String = chars[start..].iter().collect();
            let end = rest.find(&close).map_or(chars.len(), |e| {
                start + rest[..e].chars().count() + close.chars().count()
            });
            out.extend(chars[i..end].iter().map(|c| blank(*c)));
            i = end;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let step = if chars[i] == '\\' { 2 } else { 1 };
                for k in 0..step {
                    if let Some(c) = chars.get(i + k) {
                        out.push(blank(*c));
                    }
                }
                i += step;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character: up to its closing quote.
            let end = chars[i + 2..]
                .iter()
                .position(|c| *c == '\'')
                .map_or(chars.len(), |p| i + 3 + p);
            out.extend(std::iter::repeat_n(' ', end - i));
            i = end;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Each function of `code` (literals blanked) as (its name, its first line, its length in
/// lines), outside the unit tests.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with("#[cfg(test)]"))
        .unwrap_or(lines.len());
    let mut found = Vec::new();
    for start in 0..end {
        let mut words = lines[start].split_whitespace().peekable();
        while words
            .peek()
            .is_some_and(|w| w.starts_with("pub") || matches!(*w, "async" | "const" | "unsafe"))
        {
            words.next();
        }
        if words.next() != Some("fn") {
            continue;
        }
        let name: String = words
            .next()
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut depth = 0i32;
        let mut opened = false;
        for (at, line) in lines.iter().enumerate().take(end).skip(start) {
            // A declaration without a body (a trait's) ends at its `;`.
            if !opened && line.contains(';') && !line.contains('{') {
                break;
            }
            for c in line.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                found.push((name.clone(), start + 1, at - start + 1));
                break;
            }
        }
    }
    found
}

/// Functions that say one thing: none over 120 lines.
#[test]
fn no_function_is_longer_than_120_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = 0;
    let mut long = Vec::new();
    for file in sources(&root.join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, line, length) in functions(&blank_literals(&text)) {
            all += 1;
            if length > 120 {
                long.push(format!("{}:{line} {name}: {length} lines", file.display()));
            }
        }
    }
    assert!(all > 500, "the scan found only {all} functions");
    assert!(long.is_empty(), "functions over 120 lines: {long:#?}");
}

#[test]
fn the_function_scan_sees_through_literals() {
    let text = "fn a() {\n    let s = \"}}}\";\n    let c = '}';\n    // }\n    let r = r#\"}\"#;\n}\nfn b<'x>(v: &'x str) -> &'x str {\n    v\n}\n";
    let found = functions(&blank_literals(text));
    assert_eq!(
        found,
        vec![("a".to_owned(), 1, 6), ("b".to_owned(), 7, 3)],
        "{}",
        blank_literals(text)
    );
}
