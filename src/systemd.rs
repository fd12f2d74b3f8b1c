//! `darvault systemd`: user units and timers that run darvault unattended — FULL, DIFF and
//! INCR backups on the config's schedule, replication after every successful backup, a
//! rolling audit, and cleanup. Timers are persistent (a run missed while the machine was off
//! happens at the next boot); a unit that is still running is never started twice, and the
//! repository lock keeps two backups from overlapping.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, Serialize)]
pub struct Unit {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Installed {
    pub dir: PathBuf,
    pub units: Vec<String>,
    /// What was run to enable the timers, or what to run when that was not possible.
    pub next: String,
}

/// The units for this config, run by this darvault binary.
pub fn units(config: &Config, exe: &Path) -> Vec<Unit> {
    let config_file = config.file.canonicalize().unwrap_or(config.file.clone());
    let run = |args: &str| {
        format!(
            // Timers may meet (a long replicate, the daily audit): a writer waits for the
            // other instead of failing.
            "{} --config {} --quiet --lock-wait 12h {args}",
            quote(&exe.display().to_string()),
            quote(&config_file.display().to_string())
        )
    };
    let backup_timeout = config
        .definitions
        .iter()
        .map(|d| d.timeout.0.as_secs())
        .max()
        .unwrap_or(86400)
        * config.definitions.len().max(1) as u64
        + 3600;
    let schedule = &config.schedule;
    let mut units = Vec::new();
    for (level, when) in [
        ("full", &schedule.full),
        ("diff", &schedule.diff),
        ("incr", &schedule.incr),
    ] {
        units.push(service(
            &format!("backup-{level}"),
            &format!("{} backup of every definition", level.to_uppercase()),
            &run(&format!("backup --{level}")),
            backup_timeout,
            "OnSuccess=darvault-replicate.service\n",
            // Exit 6: published with warnings, still worth replicating.
            "SuccessExitStatus=6\n",
        ));
        units.push(timer(&format!("backup-{level}"), when));
    }
    units.push(service(
        "replicate",
        "Copy new sets to every destination",
        &run("replicate"),
        3 * 86400,
        "",
        "",
    ));
    units.push(service(
        "audit",
        "Prove today's share of every copy (each set once a month) and repair it",
        &run("audit --portion daily/month --repair"),
        86400,
        "",
        "",
    ));
    units.push(timer("audit", &schedule.audit));
    units.push(service(
        "cleanup",
        "Remove sets the retention policy lets go",
        // A finite `keep.full` is the explicit policy that lets FULLs go unattended.
        &run("cleanup --yes"),
        6 * 3600,
        "",
        "",
    ));
    units.push(timer("cleanup", &schedule.cleanup));
    units
}

fn service(
    job: &str,
    what: &str,
    exec: &str,
    timeout_secs: u64,
    unit_extra: &str,
    service_extra: &str,
) -> Unit {
    Unit {
        name: format!("darvault-{job}.service"),
        text: format!(
            "# Written by `darvault systemd`; run it again after changing the config.\n\
             [Unit]\n\
             Description=darvault: {what}\n\
             {unit_extra}\n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart={exec}\n\
             # Secrets the config names with *_env (passphrases, webhook URLs), if any.\n\
             EnvironmentFile=-%h/.config/darvault/environment\n\
             TimeoutStartSec={timeout_secs}\n\
             # darvault stops its children (dar, par2) on SIGTERM before this runs out.\n\
             TimeoutStopSec=60\n\
             Nice=10\n\
             IOSchedulingClass=idle\n\
             {service_extra}"
        ),
    }
}

fn timer(job: &str, when: &str) -> Unit {
    Unit {
        name: format!("darvault-{job}.timer"),
        text: format!(
            "# Written by `darvault systemd`; the schedule is [schedule] in the config.\n\
             [Unit]\n\
             Description=darvault: {job} on schedule\n\
             \n\
             [Timer]\n\
             OnCalendar={when}\n\
             Persistent=true\n\
             RandomizedDelaySec=5min\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n"
        ),
    }
}

/// systemd splits ExecStart on spaces; quote what may hold them.
fn quote(s: &str) -> String {
    if s.contains([' ', '"', '\\', '\'']) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_owned()
    }
}

/// Write the units to the user's systemd folder and enable the timers (when a user systemd
/// is running; otherwise say what to run).
pub fn install(units: &[Unit]) -> Result<Installed> {
    let dir = crate::paths::config_home().join("systemd/user");
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    for u in units {
        let path = dir.join(&u.name);
        std::fs::write(&path, &u.text).map_err(Error::io("cannot write", &path))?;
    }
    let timers: Vec<&str> = units
        .iter()
        .map(|u| u.name.as_str())
        .filter(|n| n.ends_with(".timer"))
        .collect();
    let enable = format!(
        "systemctl --user daemon-reload && systemctl --user enable --now {}",
        timers.join(" ")
    );
    let enabled = std::process::Command::new("sh")
        .args(["-c", &enable])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let next = if enabled {
        format!("ran: {enable}\n(to run timers while logged out: loginctl enable-linger $USER)")
    } else {
        format!("no user systemd answered; when logged in, run:\n  {enable}")
    };
    Ok(Installed {
        dir,
        units: units.iter().map(|u| u.name.clone()).collect(),
        next,
    })
}
