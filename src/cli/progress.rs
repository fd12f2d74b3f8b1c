//! Progress on the terminal: an indicatif spinner with bytes and rate per long task on a TTY;
//! elsewhere (systemd, cron) a plain log line every half minute.

use std::io::IsTerminal;
use std::sync::Mutex;
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
            Box::new(LogLines {
                label: label.to_owned(),
                state: Mutex::new((0, Instant::now())),
            })
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

struct LogLines {
    label: String,
    state: Mutex<(u64, Instant)>,
}

impl Task for LogLines {
    fn advance(&self, bytes: u64) {
        let mut s = self.state.lock().expect("progress lock");
        s.0 += bytes;
        if s.1.elapsed() > Duration::from_secs(30) {
            s.1 = Instant::now();
            tracing::info!("{}: {} so far", self.label, human_bytes(s.0));
        }
    }
}
