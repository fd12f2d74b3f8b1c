//! Progress reporting without UI: the core reports through this trait; the command line draws
//! bars on a terminal or writes periodic log lines, and tests or `--json` runs stay silent.

pub trait Progress: Send + Sync {
    /// A unit of long work begins; `total` is in bytes when known.
    fn start(&self, label: &str, total: Option<u64>) -> Box<dyn Task>;

    /// Whether a total given to `start` is shown to anyone: work done only to know it (a
    /// walk of the source) is skipped where it is not.
    fn shows_totals(&self) -> bool {
        true
    }
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

    fn shows_totals(&self) -> bool {
        false
    }
}

impl Task for Silent {
    fn advance(&self, _: u64) {}
}

/// Asks a person a yes/no question (the command line asks on its terminal); `None`: nobody
/// to ask, which means no.
pub type Ask<'a> = Option<&'a dyn Fn(&str) -> bool>;
