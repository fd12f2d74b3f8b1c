//! What every unattended command does as it ends: record its runs in the state database (the
//! metrics `status` shows) and send a notice to the configured webhooks. Neither ever fails
//! the command: a problem is logged, and a webhook URL (a secret) never appears in the log.

use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, Event, Notify};
use crate::state::{Run, State};

/// How a command ended, for people and for the metrics.
pub struct Ending {
    pub event: Event,
    /// One line: "backup --incr: 2 of 2 definitions published".
    pub title: String,
    /// Details, one per line.
    pub lines: Vec<String>,
    pub runs: Vec<Run>,
}

#[derive(Serialize)]
struct Payload<'a> {
    event: Event,
    host: String,
    title: &'a str,
    message: String,
    runs: &'a [Run],
}

pub fn finish(config: Option<&Config>, state: Option<&State>, ending: Ending) {
    if let Some(state) = state {
        for run in &ending.runs {
            if let Err(e) = state.record_run(run) {
                tracing::warn!("cannot record the run's metrics: {e}");
            }
        }
    }
    let Some(config) = config else { return };
    if !config.notify.events.contains(&ending.event) {
        return;
    }
    let payload = Payload {
        event: ending.event,
        host: crate::host_name(),
        title: &ending.title,
        message: ending.lines.join("\n"),
        runs: &ending.runs,
    };
    for (channel, url) in urls(&config.notify) {
        let body = match channel {
            "discord" => discord_body(&payload),
            _ => serde_json::to_value(&payload).unwrap_or_default(),
        };
        match post(&url, &body) {
            Ok(()) => tracing::info!("{channel} notice sent ({:?})", payload.event),
            Err(e) => tracing::warn!("the {channel} notice could not be sent: {e}"),
        }
    }
}

/// The configured URLs, read now (from the environment or a file).
fn urls(notify: &Notify) -> Vec<(&'static str, String)> {
    let read = |env: &Option<String>, file: &Option<crate::config::AbsPath>| -> Option<String> {
        if let Some(v) = env {
            crate::secrets::register_variable(v);
        }
        let from_env = env.as_ref().and_then(|v| std::env::var(v).ok());
        let from_file = file.as_ref().and_then(|f| {
            std::fs::read_to_string(f.path())
                .ok()
                .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
        });
        let url = from_env.or(from_file).filter(|u| !u.is_empty());
        if let Some(u) = &url {
            crate::secrets::register(u);
        }
        url
    };
    let mut out = Vec::new();
    match read(&notify.discord_url_env, &notify.discord_url_file) {
        Some(u) => out.push(("discord", u)),
        None if notify.discord_url_env.is_some() || notify.discord_url_file.is_some() => {
            tracing::warn!("the Discord webhook URL is configured but empty or unreadable")
        }
        None => {}
    }
    match read(&notify.webhook_url_env, &notify.webhook_url_file) {
        Some(u) => out.push(("webhook", u)),
        None if notify.webhook_url_env.is_some() || notify.webhook_url_file.is_some() => {
            tracing::warn!("the webhook URL is configured but empty or unreadable")
        }
        None => {}
    }
    out
}

/// Discord takes at most 2000 characters of content.
fn discord_body(p: &Payload) -> serde_json::Value {
    let icon = match p.event {
        Event::Success => "✅",
        Event::Warning => "⚠️",
        Event::Failure => "❌",
        Event::Damage => "🩹",
        Event::Repair => "🔧",
    };
    let mut content = format!("{icon} **{}** on {}\n{}", p.title, p.host, p.message);
    if content.chars().count() > 1900 {
        content = content.chars().take(1900).collect::<String>() + "\n…";
    }
    serde_json::json!({ "username": "darvault", "content": content })
}

fn post(url: &str, body: &serde_json::Value) -> std::result::Result<(), String> {
    let rt = crate::copy::runtime().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| e.without_url().to_string())?;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("the server answered {s}")),
        }
    })
}
