//! Values the shell completes from the user's own config and repository: definition names,
//! destination names and set names (read from the default config: $DARVAULT_CONFIG or
//! $XDG_CONFIG_HOME/darvault/config.toml).

use clap_complete::CompletionCandidate;
use darvault::config::Config;

fn config() -> Option<Config> {
    Config::load(&Config::default_path()).ok()
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
                .map(|d| CompletionCandidate::new(d.name()).help(Some(d.kind.clone().into())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn sets() -> Vec<CompletionCandidate> {
    let Some(config) = config() else {
        return Vec::new();
    };
    let repository = darvault::copy::LocalCopy::new(config.repository.path());
    config
        .definitions
        .iter()
        .filter_map(|d| repository.sets(d.name().as_str()).ok())
        .flat_map(|found| found.sets)
        .map(|s| CompletionCandidate::new(s.manifest.set.name))
        .collect()
}
