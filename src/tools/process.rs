//! One supervisor for every external program darvault runs.
//!
//! Each child runs in a session of its own, without a controlling terminal: a terminal's
//! Ctrl-C reaches darvault, not dar (darvault decides how to stop it), and job control can
//! never stop a child that touches the terminal (dar does, even for `--version`: in a process
//! group of its own inside the terminal's session it was stopped by SIGTTOU and every run
//! hung). Children get `LC_ALL=C` (parseable messages), stdin closed
//! (a question can never hang a run), stderr read on its own thread (a full pipe can never
//! block the child), and a watchdog that sends SIGTERM then SIGKILL to the whole group on
//! timeout or when darvault itself is asked to stop. A child reading a copy also stops when
//! it has read and written nothing for the copy's stall deadline: a disk that hangs holds
//! it in the kernel, where even SIGKILL may not end it (on a FUSE mount a process that
//! ends waits for the server to answer): the run then gives up on it and goes on without
//! waiting for its end.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a child that timed out gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// The same when the user asked darvault to stop (Ctrl-C must end a run within 2 s; nothing a
/// child writes is published unless the run completes, so a killed child loses nothing).
const STOP_GRACE: Duration = Duration::from_millis(700);
/// How long starting a program may take.
const SPAWN_LIMIT: Duration = Duration::from_secs(60);
/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;

static STOP_REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn stop_flag() -> &'static Arc<AtomicBool> {
    STOP_REQUESTED.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Turn SIGINT and SIGTERM into a flag that every long loop and every child watchdog checks,
/// so that a stop request cleans up instead of leaving half-written files behind.
pub fn install_stop_handler() -> std::io::Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(stop_flag()))?;
    }
    Ok(())
}

/// Err(Interrupted) once a stop was requested; call it between units of work.
pub fn check_stop() -> Result<()> {
    if stop_flag().load(Ordering::Relaxed) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// The nice value of work that goes on beside the step a backup waits for.
const BACKGROUND_NICE: i32 = 10;

/// Lower this thread's CPU priority, and that of the threads and children it starts from
/// now on, to `BACKGROUND_NICE`: work done beside the step a run waits for (dar -c, then
/// dar -t over a whole FULL) should take only the cores that step leaves. Raising it back
/// takes a privilege, so call this only on a thread that ends with that work.
pub fn lower_this_threads_priority() {
    // The thread that starts every child takes the priority of the thread that made it:
    // made now if not yet, it keeps the run's own.
    spawner();
    if thread_nice() < BACKGROUND_NICE {
        // SAFETY: a plain system call; on Linux PRIO_PROCESS with who = 0 is the calling
        // thread. Lowering one's own priority needs no privilege; failing costs only speed.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
    }
}

/// The nice value of the calling thread (Linux keeps one per thread).
fn thread_nice() -> i32 {
    // SAFETY: plain system calls; errno tells a nice of -1 from a failure.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            nice
        }
    }
}

/// In a child that leads a session of its own (after setsid): give it `nice`, and its
/// session's scheduling group too. Where the kernel groups tasks by session (autogroup,
/// the default on most distributions), nice weighs only within a group, and every child is
/// a group of its own; the group's own nice is what weighs it against the others. Both are
/// best effort (async-signal-safe calls only: this runs between fork and exec).
fn lower_in_child(nice: i32, nice_text: &[u8]) {
    // SAFETY: setpriority, open, write and close are async-signal-safe; the path is a
    // NUL-terminated literal and the text a valid buffer.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
        let group = libc::open(c"/proc/self/autogroup".as_ptr(), libc::O_WRONLY);
        if group >= 0 {
            libc::write(group, nice_text.as_ptr().cast(), nice_text.len());
            libc::close(group);
        }
    }
}

/// What of darvault's environment a child sees (`LC_ALL=C` always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Environment {
    /// What a tool needs to find programs, a home and a temporary folder (dar starts gpg,
    /// which needs PATH and a home): never darvault's secrets nor the rest of its settings.
    Minimal,
    /// All of it but the variables that hold secrets (hooks: the user's own commands).
    AllButSecrets,
    /// Nothing (a rehearsal of a bare machine).
    Empty,
}

/// The variables a child gets with `Environment::Minimal`.
const MINIMAL: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TZ",
    "GNUPGHOME",
];

/// A command to run under supervision.
pub struct Spec {
    program: PathBuf,
    args: Vec<OsString>,
    timeout: Option<Duration>,
    current_dir: Option<PathBuf>,
    environment: Environment,
    /// Give the child a terminal of its own and answer its questions (see `terminal`).
    on_terminal: bool,
    envs: Vec<(OsString, OsString)>,
    /// In-memory files the child inherits (see `options_file`).
    inherited: Vec<OwnedFd>,
    /// Stopped when it reads and writes nothing for this long (a child reading a copy).
    io_stall: Option<Duration>,
    /// Its output goes through a temporary file rather than a pipe (see `stdout_to_file`).
    stdout_to_file: bool,
    /// Stopped once this is set (see `abandon_when`).
    abandon: Option<Arc<AtomicBool>>,
}

impl Spec {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Spec {
            program: program.into(),
            args: Vec::new(),
            timeout: None,
            current_dir: None,
            environment: Environment::Minimal,
            on_terminal: false,
            envs: Vec::new(),
            inherited: Vec::new(),
            io_stall: None,
            stdout_to_file: false,
            abandon: None,
        }
    }

    /// Stop the child (SIGTERM, then SIGKILL) once `flag` is set: for a caller that serves
    /// it and can no longer (it would wait for an answer forever).
    pub fn abandon_when(&mut self, flag: Arc<AtomicBool>) -> &mut Self {
        self.abandon = Some(flag);
        self
    }

    /// Send the child's output through an unnamed temporary file, read as it grows, rather
    /// than a pipe: for a child that writes a line per file and flushes each one (`dar -c
    /// -vt`), every write to a pipe wakes the reader, which costs the child more than the
    /// work (100,000 small files: 17.3 s through a pipe, 15.1 s through a file, 14.7 s into
    /// /dev/null). What has been read is given back to the file system as it goes.
    pub fn stdout_to_file(&mut self) -> &mut Self {
        self.stdout_to_file = true;
        self
    }

    /// Stop the child when it reads and writes nothing for `stall` (it reads a copy that
    /// may hang: see the module comment).
    pub fn io_stall(&mut self, stall: Option<Duration>) -> &mut Self {
        self.io_stall = stall;
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// For a dar on a machine without gpg: the child finds the gpg stand-in on its PATH (see
    /// `gpg_stand_in`) and gets its own controlling terminal, on which dar's start-up question
    /// about gpg is answered if it is asked anyway (see `terminal`).
    pub fn on_terminal(&mut self) -> &mut Self {
        self.on_terminal = true;
        self
    }

    /// Nothing of this process's environment reaches the child (LC_ALL=C aside).
    pub fn clean_env(&mut self) -> &mut Self {
        self.environment = Environment::Empty;
        self
    }

    /// The child sees darvault's whole environment but the variables holding secrets.
    pub fn inherit_env(&mut self) -> &mut Self {
        self.environment = Environment::AllButSecrets;
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        for a in args {
            self.arg(a);
        }
        self
    }

    pub fn timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Pass `text` as an options file that exists only in memory: `<flag> /dev/fd/N`.
    /// Used for secrets, which must never appear in the argument list `ps` shows.
    pub fn options_file(&mut self, flag: &str, text: &str) -> Result<&mut Self> {
        let fd = super::secret::memory_file(text)?;
        self.arg(flag).arg(format!("/dev/fd/{}", fd.as_raw_fd()));
        self.inherited.push(fd);
        Ok(self)
    }

    pub fn current_dir(&mut self, dir: &Path) -> &mut Self {
        self.current_dir = Some(dir.to_owned());
        self
    }

    fn name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }

    /// What a run of this command is counted as in CPU time: the program and its operation
    /// (the first argument that is not one of dar's quiet flags), e.g. "dar -t",
    /// "par2 create".
    fn cpu_label(&self) -> String {
        let name = self.name();
        let name = name.strip_suffix("_static").unwrap_or(&name);
        let mut args = self.args.iter().map(|a| a.to_string_lossy());
        let mut operation = None;
        while let Some(arg) = args.next() {
            match arg.as_ref() {
                "-Q" | "-N" => {}
                // An options file (a key) and its path.
                "-B" => {
                    args.next();
                }
                _ => {
                    operation = Some(arg);
                    break;
                }
            }
        }
        match operation {
            Some(op) if op.len() <= 12 && !op.contains('/') => format!("{name} {op}"),
            _ => name.to_owned(),
        }
    }

    /// A printable form of the command line, for logs.
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Run to completion, handing stdout to `consume` as it arrives (on this thread).
    /// Returns how the program ended and what `consume` returned; the exit code is not judged
    /// here: each tool has its own meaning for it.
    pub fn run<R>(&self, consume: impl FnOnce(&mut dyn BufRead) -> R) -> Result<(Finished, R)> {
        check_stop()?;
        tracing::debug!(target: crate::logs::OUTPUT_TARGET, "$ {}", self.display());
        let (command, output_file, terminal) = self.command();
        let mut child = self.start(command)?;
        let answerer = terminal.map(super::terminal::Terminal::into_answerer);
        let name = self.name();
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_reader = thread::spawn({
            let name = name.clone();
            move || read_stderr(stderr, &name, answerer)
        });
        let done = Arc::new(AtomicBool::new(false));
        let given_up = Arc::new(AtomicBool::new(false));
        let watchdog = spawn_watchdog(
            child.id(),
            Limits {
                timeout: self.timeout,
                io_stall: self.io_stall,
                abandon: self.abandon.clone(),
            },
            Arc::clone(&done),
            Arc::clone(&given_up),
        );

        let consumed = match output_file {
            Some(file) => {
                let output = Growing {
                    file,
                    read: 0,
                    released: 0,
                    pid: child.id(),
                    ended: false,
                    given_up: Arc::clone(&given_up),
                };
                consume(&mut BufReader::with_capacity(64 * 1024, output))
            }
            None => {
                let stdout = Abandonable {
                    pipe: child.stdout.take().expect("piped"),
                    given_up: Arc::clone(&given_up),
                };
                let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
                let consumed = consume(&mut stdout);
                // Whatever the consumer left unread must still be drained or the child may
                // block.
                let _ = std::io::copy(&mut stdout, &mut std::io::sink());
                consumed
            }
        };
        let status = wait(&mut child, &self.program, &given_up, &self.cpu_label())?;
        done.store(true, Ordering::Relaxed);
        let stop = watchdog.join().expect("watchdog thread");
        let finished = ended(name, status, stop, stderr_reader)?;
        Ok((finished, consumed))
    }

    /// The command to spawn: its environment, its output (a file where one can be made), its
    /// terminal when asked for, and what the child does before it runs the program.
    fn command(
        &self,
    ) -> (
        Command,
        Option<std::fs::File>,
        Option<super::terminal::Terminal>,
    ) {
        let mut command = Command::new(&self.program);
        self.set_environment(&mut command);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        // Where no temporary file can be made (a read-only or full temporary folder), a pipe
        // does: slower, never failing the run for it.
        let made = self.stdout_to_file.then(|| {
            let file = tempfile::tempfile()?;
            let theirs = file.try_clone()?;
            Ok::<_, std::io::Error>((file, theirs))
        });
        let output_file = match made {
            Some(Ok((file, theirs))) => {
                command.stdout(theirs);
                Some(file)
            }
            Some(Err(e)) => {
                tracing::debug!("{}: output through a pipe: {e}", self.name());
                command.stdout(Stdio::piped());
                None
            }
            None => {
                command.stdout(Stdio::piped());
                None
            }
        };
        let terminal = match self.on_terminal {
            true => self.gpg_answered(&mut command),
            false => None,
        };
        self.before_exec(&mut command, terminal.as_ref().map(|t| t.slave_fd()));
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        (command, output_file, terminal)
    }

    fn set_environment(&self, command: &mut Command) {
        match self.environment {
            Environment::Empty => {
                command.env_clear();
            }
            Environment::Minimal => {
                command.env_clear();
                for var in MINIMAL {
                    if let Some(value) = std::env::var_os(var) {
                        command.env(var, value);
                    }
                }
            }
            Environment::AllButSecrets => {
                for var in crate::secrets::variables() {
                    command.env_remove(var);
                }
                // The user's own, not the folder darvault points ssh's library at.
                match super::ssh::user_state_home() {
                    Some(Some(value)) => command.env("XDG_STATE_HOME", value),
                    Some(None) => command.env_remove("XDG_STATE_HOME"),
                    None => command,
                };
            }
        }
    }

    /// dar's start-up question about gpg: the stand-in keeps it from being asked, and a
    /// terminal answers it if it is asked anyway. A bare root (no /dev/ptmx) has no terminal
    /// to give: the stand-in alone then.
    fn gpg_answered(&self, command: &mut Command) -> Option<super::terminal::Terminal> {
        let path = self
            .envs
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let path = path.or(match self.environment {
            Environment::Empty => None,
            _ => std::env::var_os("PATH"),
        });
        if let Some(path) = super::gpg_stand_in::path_with_stand_in(path) {
            command.env("PATH", path);
        }
        super::terminal::Terminal::open()
            .inspect_err(|e| tracing::debug!("no pseudo-terminal for dar: {e}"))
            .ok()
    }

    /// Either way the child leads a new session, hence a process group of its own: with
    /// `controlling` as its terminal when given.
    fn before_exec(&self, command: &mut Command, controlling: Option<i32>) {
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child if
        // this thread dies (even by kill -9), so no orphaned dar keeps writing into a staging
        // directory that the next run will clean. Every spawn waits in its spawning thread.
        // The in-memory option files are opened with close-on-exec; only this child keeps them.
        let inherited: Vec<i32> = self.inherited.iter().map(|fd| fd.as_raw_fd()).collect();
        // Children start on a spawning thread of their own: they get the priority of the
        // thread that asked for them here (setpriority is async-signal-safe).
        let nice = thread_nice();
        let nice_text = nice.to_string().into_bytes();
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                for fd in &inherited {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                match controlling {
                    Some(fd) => super::terminal::Terminal::make_controlling(fd)?,
                    None => {
                        if libc::setsid() == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                if nice > 0 {
                    lower_in_child(nice, &nice_text);
                }
                Ok(())
            });
        }
    }

    fn start(&self, command: Command) -> Result<std::process::Child> {
        let spawned = spawn(command).ok_or_else(|| Error::Tool {
            tool: self.name(),
            status: format!(
                "could not start within {}s (a disk that stopped answering?)",
                SPAWN_LIMIT.as_secs()
            ),
            detail: String::new(),
        })?;
        spawned.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingTool {
                    tool: self.program.display().to_string(),
                    hint: "install it (see the README) or set its path under [tools]".into(),
                }
            } else {
                Error::io("cannot start", &self.program)(e)
            }
        })
    }

    /// Run, collecting stdout as text (for short outputs such as version strings).
    pub fn output(&self) -> Result<(Finished, String)> {
        self.run(|out| {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        })
    }
}

/// How a supervised program ended.
pub struct Finished {
    pub tool: String,
    pub status: ExitStatus,
    /// The last few KiB of what it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The error to report when this exit is not acceptable to the caller.
    pub fn failure(&self) -> Error {
        let status = match (self.status.code(), self.status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
        };
        Error::Tool {
            tool: self.tool.clone(),
            status,
            detail: tail_detail(&self.stderr),
        }
    }

    /// Ok when the exit code is one of `ok`, else the failure.
    pub fn expect(self, ok: &[i32]) -> Result<Finished> {
        match self.code() {
            Some(c) if ok.contains(&c) => Ok(self),
            _ => Err(self.failure()),
        }
    }
}

fn tail_detail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        String::new()
    } else {
        let start = lines.len().saturating_sub(6);
        format!(": {}", lines[start..].join(" | "))
    }
}

/// Log the child's stderr line by line and keep its tail; questions in it (which end
/// without a newline) go to the answerer as soon as they arrive.
fn read_stderr(
    mut stderr: impl Read,
    tool: &str,
    mut answerer: Option<super::terminal::Answerer>,
) -> String {
    let mut tail = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(a) = answerer.as_mut() {
            a.feed(&buf[..n]);
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            keep_line(&mut tail, tool, &line[..line.len() - 1]);
        }
    }
    if !pending.is_empty() {
        keep_line(&mut tail, tool, &pending);
    }
    tail
}

fn keep_line(tail: &mut String, tool: &str, line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    tracing::debug!(target: crate::logs::OUTPUT_TARGET, "{tool}: {line}");
    tail.push_str(&line);
    tail.push('\n');
    if tail.len() > 2 * STDERR_TAIL {
        let cut = tail.len() - STDERR_TAIL;
        let cut = (cut..tail.len())
            .find(|&i| tail.is_char_boundary(i))
            .unwrap_or(0);
        tail.drain(..cut);
    }
}

enum WhyStopped {
    StopRequested,
    /// Its caller gave up on it (see `Spec::abandon_when`).
    Abandoned,
    /// Read and wrote nothing for this long.
    Stalled(Duration),
    Timeout(Duration),
}

/// When a child is stopped.
struct Limits {
    timeout: Option<Duration>,
    io_stall: Option<Duration>,
    abandon: Option<Arc<AtomicBool>>,
}

fn spawn_watchdog(
    pid: u32,
    limits: Limits,
    done: Arc<AtomicBool>,
    given_up: Arc<AtomicBool>,
) -> thread::JoinHandle<Option<WhyStopped>> {
    let started = Instant::now();
    thread::spawn(move || {
        let mut io = (progress_of(pid), Instant::now());
        let why = loop {
            if done.load(Ordering::Relaxed) {
                return None;
            }
            if stop_flag().load(Ordering::Relaxed) {
                break WhyStopped::StopRequested;
            }
            if limits
                .abandon
                .as_ref()
                .is_some_and(|a| a.load(Ordering::Relaxed))
            {
                break WhyStopped::Abandoned;
            }
            if let Some(t) = limits.timeout.filter(|t| started.elapsed() > *t) {
                break WhyStopped::Timeout(t);
            }
            if let Some(stall) = limits.io_stall {
                let now = progress_of(pid);
                // Unknown (no /proc/<pid>/io here) counts as moving: never a false stall.
                if now != io.0 || now.is_none() {
                    io = (now, Instant::now());
                } else if io.1.elapsed() > stall {
                    break WhyStopped::Stalled(stall);
                }
            }
            thread::sleep(Duration::from_millis(50));
        };
        signal_group(pid, libc::SIGTERM);
        let term_sent = Instant::now();
        let grace = match why {
            WhyStopped::StopRequested | WhyStopped::Abandoned | WhyStopped::Stalled(_) => {
                STOP_GRACE
            }
            WhyStopped::Timeout(_) => KILL_GRACE,
        };
        while !done.load(Ordering::Relaxed) {
            if term_sent.elapsed() > grace {
                signal_group(pid, libc::SIGKILL);
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // A child held by a disk that hangs may outlive SIGKILL: the run stops waiting.
        let killed = Instant::now();
        while !done.load(Ordering::Relaxed) && killed.elapsed() < STOP_GRACE {
            thread::sleep(Duration::from_millis(50));
        }
        given_up.store(true, Ordering::Relaxed);
        Some(why)
    })
}

/// Start `command` on the one thread that starts every child, waiting no longer than
/// `SPAWN_LIMIT`: starting a program closes the descriptors it must not inherit, and on a
/// FUSE mount that hangs a close never returns. That thread lives as long as darvault, so
/// the children's PR_SET_PDEATHSIG (tied to the thread that started them) fires only when
/// darvault itself ends. None when the start was given up on.
type SpawnRequest = (Command, std::sync::mpsc::SyncSender<std::io::Result<Child>>);

/// The long-lived thread that starts every child (made on first use).
fn spawner() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>> =
        OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (mut command, answer) in incoming {
                    let _ = answer.send(command.spawn());
                }
            })
            .expect("the thread that starts programs");
        std::sync::Mutex::new(requests)
    })
}

fn spawn(command: Command) -> Option<std::io::Result<Child>> {
    let (answer, started) = std::sync::mpsc::sync_channel(1);
    spawner()
        .lock()
        .expect("spawner")
        .send((command, answer))
        .ok()?;
    started.recv_timeout(SPAWN_LIMIT).ok()
}

/// What a process has done so far: bytes read and written (`/proc/<pid>/io`) and CPU time
/// (`/proc/<pid>/stat`), every thread of it. A process waiting on a disk that hangs moves
/// neither; one computing (par2 solving its matrix) moves the second. None when unknown.
fn progress_of(pid: u32) -> Option<(u64, u64)> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces): state, ppid, … utime is the 12th.
    let mut after_name = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let cpu = after_name.next()?.parse::<u64>().ok()? + after_name.next()?.parse::<u64>().ok()?;
    Some((field("rchar:")? + field("wchar:")?, cpu))
}

/// A child's stdout that reads as ended once the run has given up on the child.
struct Abandonable {
    pipe: std::process::ChildStdout,
    given_up: Arc<AtomicBool>,
}

impl Read for Abandonable {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut ready = libc::pollfd {
                fd: self.pipe.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll of one valid descriptor.
            let polled = unsafe { libc::poll(&mut ready, 1, 100) };
            if polled > 0 && ready.revents != 0 {
                return self.pipe.read(buf);
            }
            if polled < 0
                && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                return Err(std::io::Error::last_os_error());
            }
            if self.given_up.load(Ordering::Relaxed) {
                return Ok(0);
            }
        }
    }
}

/// A child's output file, read as the child writes it (at its own offset: the child writes
/// at the shared one), ended once the child has exited and all of it is read, or the run
/// has given up on the child.
struct Growing {
    file: std::fs::File,
    read: u64,
    /// Bytes before this have been given back to the file system.
    released: u64,
    pid: u32,
    ended: bool,
    given_up: Arc<AtomicBool>,
}

impl Growing {
    /// Punch out what has been read, a few MiB at a time, so the file stays small.
    fn release(&mut self) {
        const STEP: u64 = 4 << 20;
        let upto = self.read & !4095;
        if upto - self.released < STEP {
            return;
        }
        // SAFETY: fallocate on a descriptor this struct owns; failure only keeps the bytes.
        unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                self.released as libc::off_t,
                (upto - self.released) as libc::off_t,
            );
        }
        self.released = upto;
    }
}

impl Read for Growing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            let n = self.file.read_at(buf, self.read)?;
            if n > 0 {
                self.read += n as u64;
                self.release();
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            // Once it has exited it writes no more: one last read, then the end.
            self.ended = has_exited(self.pid) || self.given_up.load(Ordering::Relaxed);
            if !self.ended {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The child has exited (it is left to be reaped by `wait`).
fn has_exited(pid: u32) -> bool {
    // SAFETY: waitid with WNOWAIT only looks at the child's state; `info` is plain data.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let looked = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        // A failed look (a sandbox that forbids it) counts as the end: the output is then
        // read as far as it goes, never waited on forever.
        looked != 0 || info.si_pid() != 0
    }
}

fn signal_group(pid: u32, signal: i32) {
    // The child leads its own session and group (setsid), so its pid is the group id.
    // SAFETY: killpg only sends a signal; a stale group id at worst yields ESRCH.
    unsafe {
        libc::killpg(pid as libc::pid_t, signal);
    }
}

/// The child's exit status, its CPU time counted under `label`; None once the run has
/// given up on it.
fn wait(
    child: &mut Child,
    program: &Path,
    given_up: &AtomicBool,
    label: &str,
) -> Result<Option<ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: wait4 fills the status and the plain rusage struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            crate::cpu::add(label, crate::cpu::of_child(&usage));
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if reaped < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io("waiting for", program)(error));
            }
        }
        if given_up.load(Ordering::Relaxed) {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Find an executable: an explicit path, else the first match on PATH that is a real binary.
/// Scripts are skipped on purpose: a wrapper (such as a Python shim) cannot be carried into a
/// set's bundle and may hide which engine really runs.
pub fn find_executable(name: &str, explicit: Option<&Path>, hint: &str) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(Error::MissingTool {
                tool: p.display().to_string(),
                hint: "the path configured under [tools] does not exist".into(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut script = None;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            if is_script(&candidate) {
                script.get_or_insert(candidate);
            } else {
                return Ok(candidate);
            }
        }
    }
    script.ok_or_else(|| Error::MissingTool {
        tool: name.into(),
        hint: hint.into(),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn is_script(p: &Path) -> bool {
    let mut head = [0u8; 2];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head == b"#!")
        .unwrap_or(false)
}

/// How a child's run ended, as darvault sees it: its status and stderr, or why it was
/// stopped.
fn ended(
    name: String,
    status: Option<std::process::ExitStatus>,
    stop: Option<WhyStopped>,
    stderr_reader: thread::JoinHandle<String>,
) -> Result<Finished> {
    if let Some(WhyStopped::Stalled(t)) = stop {
        // Not waited for: its end may never come (the stderr thread goes with it).
        return Err(Error::Stalled {
            what: name,
            copy: "the copy it reads".into(),
            seconds: t.as_secs(),
        });
    }
    let Some(status) = status else {
        // Stopped, but held where even SIGKILL does not reach (a disk that hangs).
        return Err(match stop {
            Some(WhyStopped::Timeout(t)) => Error::Tool {
                tool: name,
                status: format!("timed out after {}s and could not be stopped", t.as_secs()),
                detail: String::new(),
            },
            _ => Error::Interrupted,
        });
    };
    let stderr_tail = stderr_reader.join().expect("stderr thread");
    match stop {
        Some(WhyStopped::StopRequested) => return Err(Error::Interrupted),
        Some(WhyStopped::Timeout(t)) => {
            return Err(Error::Tool {
                tool: name,
                status: format!("timed out after {}s", t.as_secs()),
                detail: tail_detail(&stderr_tail),
            });
        }
        Some(WhyStopped::Abandoned) => {
            return Err(Error::Failed(format!("{name}: stopped, given up on")));
        }
        Some(WhyStopped::Stalled(_)) | None => {}
    }
    tracing::debug!(target: crate::logs::OUTPUT_TARGET, "{name}: {status}");
    Ok(Finished {
        tool: name,
        status,
        stderr: stderr_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_exit_code_and_stderr_tail() {
        let mut spec = Spec::new("/bin/sh");
        spec.args(["-c", "echo out; echo oops >&2; exit 3"]);
        let (finished, out) = spec.output().unwrap();
        assert_eq!(out, "out\n");
        assert_eq!(finished.code(), Some(3));
        assert!(finished.failure().to_string().contains("oops"));
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let mut spec = Spec::new("/bin/sh");
        spec.args(["-c", "sleep 30 & sleep 30"])
            .timeout(Some(Duration::from_millis(200)));
        // Returns at all only if the background sleep, which holds stdout open, was killed too.
        let err = spec.output().err().expect("timed out");
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[test]
    fn a_child_that_reads_and_writes_nothing_is_stopped_and_one_that_works_is_not() {
        let started = Instant::now();
        let mut idle = Spec::new("/bin/sh");
        idle.args(["-c", "sleep 30"])
            .io_stall(Some(Duration::from_millis(300)));
        let err = idle.output().err().expect("stopped");
        assert!(matches!(err, Error::Stalled { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut busy = Spec::new("/bin/sh");
        busy.args(["-c", "for i in 1 2 3 4 5 6; do echo $i; sleep 0.1; done"])
            .io_stall(Some(Duration::from_millis(300)));
        let (finished, out) = busy.output().expect("not stopped");
        assert_eq!(finished.code(), Some(0));
        assert_eq!(out.lines().count(), 6);
    }

    #[test]
    fn output_through_a_file_is_read_whole_as_it_grows() {
        let mut spec = Spec::new("/bin/sh");
        spec.args([
            "-c",
            "for i in 0 1 2; do echo line$i; sleep 0.1; done; head -c 9000000 /dev/zero | tr '\\0' x; echo; echo end",
        ])
        .stdout_to_file();
        let (finished, out) = spec.output().unwrap();
        assert_eq!(finished.code(), Some(0));
        assert!(out.starts_with("line0\nline1\nline2\nxxx"));
        assert!(out.ends_with("xxx\nend\n"));
        assert_eq!(out.len(), 18 + 9_000_000 + 1 + 4);
        // Killed on a timeout, it ends the read all the same.
        let mut spec = Spec::new("/bin/sh");
        spec.args(["-c", "echo started; sleep 30"])
            .stdout_to_file()
            .timeout(Some(Duration::from_millis(300)));
        let err = spec.output().err().expect("timed out");
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}
