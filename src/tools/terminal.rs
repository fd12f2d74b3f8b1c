//! A pseudo-terminal for the one question a static dar asks on a machine without gpg:
//! "INITIALIZATION FAILED FOR GPGME … [return = YES | Esc = NO]" (darvault encrypts with AES,
//! never with gpg, so going on is right). dar writes its questions to stderr but reads the
//! key from its controlling terminal, and refuses under -Q or without a terminal; so the
//! child gets a terminal of its own, its stderr is watched for questions, and the answer is
//! typed on the terminal: Return to that one, Esc (no) to any other, as -Q would.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const PROMPT: &[u8] = b"[return = YES | Esc = NO]";
const GPGME: &[u8] = b"GPGME";

pub struct Terminal {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Terminal {
    pub fn open() -> std::io::Result<Terminal> {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the out-parameters; no name, termios or
        // window size is asked for.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc == -1 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened and are owned by nothing else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        for fd in [&master, &slave] {
            // Only the child's setup touches the slave, by number: no exec inherits either.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Terminal { master, slave })
    }

    /// Run in the child before exec: a new session whose controlling terminal is this one.
    /// Only async-signal-safe calls.
    pub fn make_controlling(slave: RawFd) -> std::io::Result<()> {
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe; `slave` is open here.
        unsafe {
            if libc::setsid() == -1 || libc::ioctl(slave, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub fn slave_fd(&self) -> RawFd {
        self.slave.as_raw_fd()
    }

    /// The answering half, for the thread that reads the child's stderr. It keeps the
    /// slave open: the child holds the terminal only as its controlling terminal, and a
    /// terminal nobody holds has nowhere to type.
    pub fn into_answerer(self) -> Answerer {
        Answerer {
            master: std::fs::File::from(self.master),
            _slave: self.slave,
            seen: Vec::new(),
        }
    }
}

pub struct Answerer {
    master: std::fs::File,
    _slave: OwnedFd,
    seen: Vec<u8>,
}

impl Answerer {
    /// What the child wrote to stderr: answer each complete question in it.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.seen.extend_from_slice(bytes);
        while let Some(at) = find(&self.seen, PROMPT) {
            let question = &self.seen[..at];
            let answer: &[u8] = if find(question, GPGME).is_some() {
                tracing::debug!("no gpg here: answering dar's GPGME question with Return");
                b"\r"
            } else {
                tracing::warn!(
                    "dar asked: {}; answered no",
                    String::from_utf8_lossy(question).trim()
                );
                b"\x1b"
            };
            let _ = self.master.write_all(answer);
            self.seen.drain(..at + PROMPT.len());
        }
        // Keep only what could be the start of a question.
        if let Some(newline) = self.seen.iter().rposition(|b| *b == b'\n') {
            self.seen.drain(..=newline);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
