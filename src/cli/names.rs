//! Values the shell completes from the user's own config and repository: definition names,
//! destination names, set names and copies. The config is the one the command line being
//! completed names with `--config`, else the default ($DARVAULT_CONFIG or
//! $XDG_CONFIG_HOME/darvault/config.toml); set names follow the line's `-d` definitions.

use std::ffi::OsStr;

use clap_complete::CompletionCandidate;
use clap_complete::engine::{PathCompleter, ValueCompleter};
use darvault::config::Config;

/// The words of the command line being completed (the shell passes them after `--`).
fn line() -> Vec<String> {
    std::env::args().skip_while(|a| a != "--").skip(1).collect()
}

/// The values the line gives an option (`--opt V`, `--opt=V`, and the short form `-o V`).
fn values_of(words: &[String], long: &str, short: Option<&str>) -> Vec<String> {
    let mut values = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix(&format!("{long}=")) {
            values.push(v.to_owned());
        } else if (w == long || Some(w.as_str()) == short)
            && let Some(v) = words.get(i + 1)
        {
            values.push(v.clone());
        }
    }
    values
}

fn config() -> Option<Config> {
    let path = values_of(&line(), "--config", None)
        .pop()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(Config::default_path);
    Config::load(&path).ok()
}

pub fn definitions() -> Vec<CompletionCandidate> {
    config()
        .map(|c| {
            c.definitions
                .iter()
                .map(|d| CompletionCandidate::new(d.name().as_str()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn destinations() -> Vec<CompletionCandidate> {
    config()
        .map(|c| {
            c.destinations
                .iter()
                .map(|d| CompletionCandidate::new(d.name()).help(Some(d.kind.to_string().into())))
                .collect()
        })
        .unwrap_or_default()
}

/// A copy: a destination name, `repository`, or a folder.
pub fn copies(current: &OsStr) -> Vec<CompletionCandidate> {
    let mut candidates = Vec::new();
    if config().is_some() {
        candidates.push(CompletionCandidate::new("repository").help(Some("the repository".into())));
    }
    candidates.extend(destinations());
    let typed = current.to_string_lossy();
    candidates.retain(|c| c.get_value().to_string_lossy().starts_with(typed.as_ref()));
    candidates.extend(PathCompleter::dir().complete(current));
    candidates
}

/// Set names of the repository, of the line's `-d` definitions when it names some.
pub fn sets() -> Vec<CompletionCandidate> {
    let Some(config) = config() else {
        return Vec::new();
    };
    let words = line();
    let wanted = [
        values_of(&words, "--definition", Some("-d")),
        values_of(&words, "--def", None),
    ]
    .concat();
    let repository = darvault::copy::LocalCopy::new(config.repository.path());
    config
        .definitions
        .iter()
        .filter(|d| wanted.is_empty() || wanted.iter().any(|w| w == d.name().as_str()))
        .filter_map(|d| repository.sets(d.name().as_str()).ok())
        .flat_map(|found| found.sets)
        .map(|s| CompletionCandidate::new(s.manifest.set.name))
        .collect()
}
