//! The `ssh` that SFTP destinations run (OpenDAL starts the system's `ssh` by name for a
//! master connection with `ControlPersist=yes`: such a master outlived a killed darvault
//! for good). darvault puts a wrapper first on its own PATH that runs the real ssh with
//! options that come before (and so win over) any given later:
//! - `ControlPersist=3`: a master ends three seconds after its last session ends, so none
//!   survives darvault, even one killed with -9 (its sessions end with it); one second was
//!   too short on a loaded machine, where the first session can take that long to start;
//! - `ServerAliveInterval=15`, `ServerAliveCountMax=4`: a server that stops answering is
//!   noticed by ssh within a minute;
//! - `ConnectTimeout=20` and `BatchMode=yes`: never a prompt, never an endless connect;
//! - on a CPU with AES instructions, AES-GCM before ChaCha20 (OpenSSH's default first
//!   choice; rclone's SSH prefers AES-GCM too): every transfer of a copy goes through the one
//!   master connection, so its cipher is the ceiling of a replication (on loopback here:
//!   256 MiB in 0.56 s with aes128-gcm, 1.09 s with chacha20-poly1305). The list is OpenSSH's
//!   default set reordered, so any server ssh reaches with its defaults still negotiates; and
//!   where the ssh configuration names ciphers itself (an old NAS), it is left alone.

//!
//! The wrapper also keeps ssh to what it needs: it runs the real ssh with an environment of
//! a few variables (home, path, user, locale, the agent's socket), so no secret or token of
//! darvault's environment reaches it. A master it starts (`-M -f`) is watched: once the
//! darvault that asked for it is gone (killed with -9 too), the watcher tells the master to
//! exit at once, within a fifth of a second. Masters keep their control sockets in
//! darvault's own private state folder (`ssh/`), where a later run removes those whose
//! master is gone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variables ssh gets (everything else of darvault's environment stays out).
const KEPT: &[&str] = &[
    "HOME",
    "PATH",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "SSH_AUTH_SOCK",
    "KRB5CCNAME",
    "XDG_RUNTIME_DIR",
];

/// The user's own `XDG_STATE_HOME`, when darvault pointed it at its control folder (the
/// SFTP library puts its control sockets there): hooks get the user's back.
static USER_STATE_HOME: OnceLock<Option<OsString>> = OnceLock::new();

/// Where `XDG_STATE_HOME` stood before darvault moved it: Some(value or None) if it did.
pub fn user_state_home() -> Option<&'static Option<OsString>> {
    USER_STATE_HOME.get()
}

const OPTIONS: &str = "-o ControlPersist=3 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 \
                       -o ConnectTimeout=20 -o BatchMode=yes";

/// The cipher preference to add: AES-GCM first where the CPU has AES instructions.
fn ciphers() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    let aes = std::arch::is_x86_feature_detected!("aes");
    #[cfg(target_arch = "aarch64")]
    let aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes = false;
    if aes && !configures_ciphers() {
        " -o Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr"
    } else {
        ""
    }
}

/// Whether the user's or the system's ssh configuration sets `Ciphers` (then a choice made
/// on the command line would override it).
fn configures_ciphers() -> bool {
    let mut files: Vec<PathBuf> = vec![PathBuf::from("/etc/ssh/ssh_config")];
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".ssh/config"));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/ssh/ssh_config.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().any(|line| {
                line.split(|c: char| c.is_whitespace() || c == '=')
                    .find(|w| !w.is_empty())
                    .is_some_and(|w| w.eq_ignore_ascii_case("ciphers"))
            })
        })
    })
}

/// Write the wrapper into `<state>/bin` (private), put that first on this process's PATH,
/// and have masters keep their control sockets in `<state>/ssh`, clearing those of masters
/// that are gone. Call before any thread starts. Without a system ssh (or a writable state
/// folder) nothing changes.
pub fn install(state: &Path) {
    let dir = state.join("bin");
    let Some(real) = real_ssh(&dir) else {
        return;
    };
    let script = wrapper_script(&real);
    let wrapper = dir.join("ssh");
    let current = std::fs::read_to_string(&wrapper).ok();
    if current.as_deref() != Some(script.as_str()) {
        use std::os::unix::fs::PermissionsExt;
        // Written aside and renamed: another darvault may be running the current one.
        let partial = dir.join(format!(".ssh.{}", std::process::id()));
        let written = crate::paths::private_dir(&dir)
            .and_then(|_| std::fs::write(&partial, &script))
            .and_then(|_| {
                std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))
            })
            .and_then(|_| std::fs::rename(&partial, &wrapper));
        if written.is_err() {
            return;
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.clone()];
    dirs.extend(std::env::split_paths(&path).filter(|p| *p != dir));
    if let Ok(joined) = std::env::join_paths(dirs) {
        // SAFETY: called from main before any other thread exists.
        unsafe { std::env::set_var("PATH", joined) };
    }
    let control = state.join("ssh");
    if crate::paths::private_dir(&control).is_ok() {
        clear_stale_control(&control);
        let _ = USER_STATE_HOME.set(std::env::var_os("XDG_STATE_HOME"));
        // SAFETY: called from main before any other thread exists.
        unsafe { std::env::set_var("XDG_STATE_HOME", &control) };
    }
}

/// The wrapper: the real ssh with darvault's options and a few variables; a master it
/// starts is told to exit as soon as the darvault that asked for it is gone.
fn wrapper_script(real: &Path) -> String {
    let env = ["/usr/bin/env", "/bin/env"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("env");
    let kept: String = KEPT
        .iter()
        .map(|v| format!(" ${{{v}+\"{v}=${v}\"}}"))
        .collect();
    let real = shell_quote(&real.display().to_string());
    format!(
        r#"#!/bin/sh
# darvault's ssh (see darvault's tools::ssh): the real one with safe options and only the
# variables it needs. First this script itself runs again with just those.
if [ -z "$DARVAULT_SSH_OWNER" ]; then
  exec {env} -i{kept} DARVAULT_SSH_OWNER=$PPID /bin/sh "$0" "$@"
fi
owner=$DARVAULT_SSH_OWNER
unset DARVAULT_SSH_OWNER
master= socket= previous=
for arg in "$@"; do
  [ "$arg" = -M ] && master=1
  [ "$previous" = -S ] && socket=$arg
  previous=$arg
done
if [ -z "$master" ] || [ -z "$socket" ]; then
  exec {real} {OPTIONS}{ciphers} "$@"
fi
# While the master connects and logs in, it goes if darvault goes (a server that took the
# connection and says nothing would hold it until ConnectTimeout).
{real} {OPTIONS}{ciphers} "$@" &
connecting=$!
(
  while kill -0 "$connecting" 2>/dev/null; do
    kill -0 "$owner" 2>/dev/null || {{ kill "$connecting" 2>/dev/null; exit 0; }}
    sleep 0.2
  done
) </dev/null >/dev/null 2>&1 &
wait "$connecting" || exit $?
# The master outlives this script (-f): it is told to exit once darvault is gone.
(
  while kill -0 "$owner" 2>/dev/null; do sleep 0.2; done
  exec {real} -S "$socket" -O exit darvault
) </dev/null >/dev/null 2>&1 &
"#,
        ciphers = ciphers()
    )
}

/// Remove control folders of masters that are gone (a killed run's): one whose socket
/// still answers belongs to a master another darvault is using.
fn clear_stale_control(control: &Path) {
    let Ok(entries) = std::fs::read_dir(control) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(".ssh-connection") {
            continue;
        }
        let in_use = std::os::unix::net::UnixStream::connect(e.path().join("master")).is_ok();
        if !in_use {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The system's ssh: the first on PATH that is not the wrapper.
fn real_ssh(wrapper_dir: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| d != wrapper_dir)
        .map(|d| d.join("ssh"))
        .find(|p| p.is_file())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
