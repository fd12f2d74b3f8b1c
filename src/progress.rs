//! Progress reporting without UI: the core reports through this trait; the command line draws
//! bars on a terminal or writes periodic log lines, and tests or `--json` runs stay silent.

pub trait Progress: Send + Sync {
    /// A unit of long work begins; `total` is in bytes when known.
    fn start(&self, label: &str, total: Option<u64>) -> Box<dyn Task>;
}

pub trait Task: Send + Sync {
    fn advance(&self, bytes: u64);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: Option<u64>) -> Box<dyn Task> {
        Box::new(Silent)
    }
}

impl Task for Silent {
    fn advance(&self, _: u64) {}
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
