//! The command-line surface (see docs/cli.md and the product contract).

pub mod logging;
pub mod names;
pub mod progress;
pub mod render;
pub mod verbs;

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};
use clap_complete::{ArgValueCandidates, ArgValueCompleter};

const EXIT_CODES: &str = "\
Exit codes:
  0    everything done and proven
  1    an operation failed
  2    usage or configuration error, or a required tool is missing (nothing was done)
  3    partial success: some definitions failed, the others succeeded
  4    an audit found damage that was not repaired
  5    an audit found damage that cannot be repaired
  6    done, with warnings (e.g. some source files could not be read)
  7    another darvault run holds the repository lock
  8    status --check: a definition's backup rule (3-2-1-1-0) does not hold
  130  interrupted (nothing half-done was published)";

#[derive(Debug, Parser)]
#[command(
    name = "darvault",
    version,
    about = "Long-term archival backups with dar: FULL/DIFF/INCR archive sets that prove, carry and repair themselves",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// Config file [default: $DARVAULT_CONFIG, else $XDG_CONFIG_HOME/darvault/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the result as JSON on stdout (logs still go to stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail on stderr (-v: info, -vv: debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr, no progress bars
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// When another run holds the copy's lock, wait this long for it ("30m", "6h") before
    /// exiting with 7 [default: do not wait]
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_wait: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented default config (never overwrites an existing file)
    Init {
        /// Where backups will be written
        #[arg(long, value_name = "DIR")]
        repository: Option<PathBuf>,
    },
    /// Run the main job on sample data in a scratch directory and narrate it
    Demo {
        /// Run in this (new or empty) directory and keep it [default: a temporary one]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Make a FULL, DIFF or INCR archive set for every definition (or the named ones)
    #[command(after_help = EXIT_CODES)]
    Backup(BackupArgs),
    /// Copy the published sets a destination lacks (verified, resumable, never deletes)
    #[command(after_help = EXIT_CODES)]
    Replicate(ReplicateArgs),
    /// Prove every set on a copy against its manifest, and repair damage in place
    #[command(after_help = EXIT_CODES)]
    Audit(AuditArgs),
    /// Restore the whole tree, or some paths, as they were at a time, from any copy
    #[command(after_help = EXIT_CODES)]
    Restore(RestoreArgs),
    /// Is the data safe? Per definition its backup rule (3-2-1-1-0) and what to do where it
    /// fails; its last runs; per copy the sets it holds, what is not proven there, free space
    #[command(after_help = EXIT_CODES)]
    Status {
        /// Also write a self-contained HTML page with plots to FILE
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Also write a node_exporter textfile (Prometheus metrics) to FILE
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
        /// Exit with 8 when a definition's backup rule does not hold (for monitoring)
        #[arg(long)]
        check: bool,
    },
    /// Remove sets that retention lets go (chain-aware; FULLs only when confirmed)
    #[command(after_help = EXIT_CODES)]
    Cleanup {
        /// Show what would be removed and the space it frees; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Only this definition (repeatable)
        #[arg(short = 'd', long = "definition", value_name = "DEF", add = ArgValueCandidates::new(names::definitions))]
        definitions: Vec<String>,
        /// Only this destination, not the repository (repeatable)
        #[arg(long = "dest", value_name = "NAME", add = ArgValueCandidates::new(names::destinations))]
        destinations: Vec<String>,
        /// Also remove this set by name, unless a kept set depends on it (repeatable)
        #[arg(long = "set", value_name = "SET", add = ArgValueCandidates::new(names::sets))]
        sets: Vec<String>,
        /// Remove FULL sets without asking (for scripts and timers)
        #[arg(long)]
        yes: bool,
    },
    /// Rehearse a restore from a copy: a sample of files, with only the set's bundled
    /// dar_static, an empty environment and an empty scratch folder
    #[command(after_help = EXIT_CODES)]
    Drill {
        /// A directory (/media/usb/darvault) or a destination name [default: the repository]
        #[arg(add = ArgValueCompleter::new(names::copies))]
        copy: Option<String>,
        /// Only this definition (repeatable)
        #[arg(short = 'd', long = "definition", value_name = "DEF", add = ArgValueCandidates::new(names::definitions))]
        definitions: Vec<String>,
        /// Files restored per definition
        #[arg(long, default_value_t = 5, value_name = "N")]
        sample: usize,
        /// Run the set's bundled dar_static even if this darvault did not bundle it (compare
        /// it with one you trust first)
        #[arg(long)]
        trust_bundle: bool,
    },
    /// Every version of the paths matching a pattern, across a copy's sets
    Find {
        /// A glob: without '/' it matches file names (*.jpg), with '/' whole paths
        /// (photos/2019/*)
        pattern: String,
        /// The copy to search: a directory or a destination name [default: the repository]
        #[arg(long, value_name = "COPY", add = ArgValueCompleter::new(names::copies))]
        from: Option<String>,
        /// Only this definition (repeatable)
        #[arg(short = 'd', long = "definition", value_name = "DEF", add = ArgValueCandidates::new(names::definitions))]
        definitions: Vec<String>,
    },
    /// Print systemd user units and timers for unattended runs (schedule: [schedule] in the
    /// config), or install and enable them
    Systemd {
        /// Write them to ~/.config/systemd/user and enable the timers
        #[arg(long)]
        install: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): darvault man | man -l -
    Man,
    /// Show the last run's log: what it did, or what the commands it ran said (dar's
    /// "Error while saving …", par2's summaries, exit statuses)
    Log {
        /// The output of the commands the last run started (commands.log), not its own log
        #[arg(long)]
        commands: bool,
    },
    /// Show the sets and chains a copy holds
    List {
        /// A copy: a directory (/media/usb/darvault) or a destination name [default: the
        /// configured repository]
        #[arg(add = ArgValueCompleter::new(names::copies))]
        copy: Option<String>,
        /// Only this definition (repeatable)
        #[arg(short = 'd', long = "definition", value_name = "DEF", add = ArgValueCandidates::new(names::definitions))]
        definitions: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Paths inside the backed-up folder (files or folders) [default: everything]
    pub paths: Vec<String>,
    /// The copy to restore from: a directory or a destination name [default: the repository]
    #[arg(long, value_name = "COPY", add = ArgValueCompleter::new(names::copies))]
    pub from: Option<String>,
    /// The definition whose sets to restore [default: the only one of the config]
    #[arg(short = 'd', long = "definition", value_name = "DEF", add = ArgValueCandidates::new(names::definitions))]
    pub definition: Option<String>,
    /// As of this time: RFC 3339, a local date or date-time (a date means its end), or
    /// "3 weeks ago" [default: the newest set]
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
    /// Where to restore (new or empty unless --overwrite)
    #[arg(long, value_name = "DIR", required_unless_present = "list")]
    pub target: Option<PathBuf>,
    /// Do not restore: list what existed (under PATH) at that time, and which set holds it
    #[arg(long, conflicts_with_all = ["target", "overwrite"])]
    pub list: bool,
    /// Restore into a folder that is not empty, replacing what is there
    #[arg(long)]
    pub overwrite: bool,
    /// When dar is not installed, run the copy's bundled dar_static even if this darvault did
    /// not bundle it (compare it with one you trust first)
    #[arg(long)]
    pub trust_bundle: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Copies to audit: directories (/media/usb/darvault) or destination names
    /// [default: the repository and every destination]
    #[arg(add = ArgValueCompleter::new(names::copies))]
    pub copies: Vec<String>,
    /// Repair damage: from another copy whose file matches the manifest, else with PAR2
    #[arg(long)]
    pub repair: bool,
    /// Also run `par2 verify` and `dar -t` on every set
    #[arg(long)]
    pub deep: bool,
    /// Only this definition (repeatable)
    #[arg(short = 'd', long = "definition", value_name = "DEF", add = ArgValueCandidates::new(names::definitions))]
    pub definitions: Vec<String>,
    /// Audit only a share of the sets: n/m, daily/week or daily/month (all shares in turn
    /// cover every set once)
    #[arg(long, value_name = "SHARE")]
    pub portion: Option<darvault::audit::Portion>,
}

#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Only this destination (repeatable) [default: all]
    #[arg(long = "to", value_name = "DEST", add = ArgValueCandidates::new(names::destinations))]
    pub destinations: Vec<String>,
    /// Only this definition (repeatable) [default: all]
    #[arg(short = 'd', long = "definition", value_name = "DEF", add = ArgValueCandidates::new(names::definitions))]
    pub definitions: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("level").required(true).args(["full", "diff", "incr"])))]
pub struct BackupArgs {
    /// A complete archive: the start of a new chain
    #[arg(long)]
    pub full: bool,
    /// What changed since the newest FULL
    #[arg(long)]
    pub diff: bool,
    /// What changed since the newest set of the chain (or since the newest DIFF, with
    /// `incr_base = "diff"` in the definition)
    #[arg(long)]
    pub incr: bool,
    /// Only this definition (repeatable) [default: all]
    #[arg(short = 'd', long = "definition", value_name = "DEF", add = ArgValueCandidates::new(names::definitions))]
    pub definitions: Vec<String>,
}

/// Write the shell's registration script to stdout: the shell then asks darvault itself for
/// completions, so definition, destination and set names come from the user's config.
pub fn completions(shell: clap_complete::Shell) -> std::io::Result<()> {
    let shells = clap_complete::env::Shells::builtins();
    let completer = shells
        .completer(&shell.to_string())
        .ok_or_else(|| std::io::Error::other(format!("no completion support for {shell}")))?;
    completer.write_registration(
        "COMPLETE",
        "darvault",
        "darvault",
        "darvault",
        &mut std::io::stdout(),
    )
}

/// Answer a shell's completion request (COMPLETE=<shell> in the environment), then exit.
pub fn complete_if_asked() {
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
}

/// Write the manual page to stdout.
pub fn man() -> std::io::Result<()> {
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout())
}

/// Ask a yes/no question on the terminal; no terminal (a timer, a pipe) means no.
pub fn ask_on_terminal(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}
