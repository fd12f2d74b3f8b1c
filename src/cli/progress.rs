//! Progress on the terminal: an indicatif spinner with bytes and rate per long task on a TTY;
//! elsewhere (systemd, cron) a plain log line every half minute.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use darvault::config::human_bytes;
use darvault::progress::{Progress, Task};

pub struct Terminal {
    enabled: bool,
}

impl Terminal {
    pub fn new(quiet: bool) -> Terminal {
        Terminal { enabled: !quiet }
    }
}

impl Progress for Terminal {
    fn shows_totals(&self) -> bool {
        self.enabled
    }

    fn start(&self, label: &str, total: Option<u64>) -> Box<dyn Task> {
        if !self.enabled {
            return Box::new(darvault::progress::Silent);
        }
        if std::io::stderr().is_terminal() {
            let bar = match total {
                Some(t) => ProgressBar::new(t).with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}",
                    )
                    .expect("valid template"),
                ),
            };
            bar.set_message(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            Box::new(Bar(bar))
        } else {
            Box::new(LogLines::start(label, total))
        }
    }
}

struct Bar(ProgressBar);

impl Task for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Without a terminal: a line on stderr (the journal, a cron mail) and in the log every half
/// minute, whether bytes moved or not, so a stall shows as lines that stop growing.
struct LogLines {
    shared: std::sync::Arc<Shared>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    label: String,
    bytes: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicBool,
}

const EVERY: Duration = Duration::from_secs(30);

impl LogLines {
    fn start(label: &str, total: Option<u64>) -> LogLines {
        let shared = std::sync::Arc::new(Shared {
            label: label.to_owned(),
            bytes: std::sync::atomic::AtomicU64::new(0),
            done: std::sync::atomic::AtomicBool::new(false),
        });
        let ticking = std::sync::Arc::clone(&shared);
        let ticker = std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            let started = Instant::now();
            let (mut last_line, mut last_bytes) = (Instant::now(), 0);
            while !ticking.done.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_secs(1));
                if last_line.elapsed() < EVERY {
                    continue;
                }
                let bytes = ticking.bytes.load(Ordering::Relaxed);
                let rate = (bytes - last_bytes) as f64 / last_line.elapsed().as_secs_f64();
                let of_total = total
                    .map(|t| format!(" of about {}", human_bytes(t)))
                    .unwrap_or_default();
                let line = format!(
                    "{}: {}{of_total} so far after {}s ({}/s over the last {}s)",
                    ticking.label,
                    human_bytes(bytes),
                    started.elapsed().as_secs(),
                    human_bytes(rate as u64),
                    last_line.elapsed().as_secs()
                );
                eprintln!("{line}");
                tracing::debug!("{line}");
                (last_line, last_bytes) = (Instant::now(), bytes);
            }
        });
        LogLines {
            shared,
            ticker: Some(ticker),
        }
    }
}

impl Task for LogLines {
    fn advance(&self, bytes: u64) {
        self.shared
            .bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        self.shared
            .done
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
