//! A file of an SFTP copy hashed by its server's shell (`wc` and `sha256sum`, run over ssh):
//! a true at-rest proof of the copy without downloading it. The system's ssh, with the
//! destination's user, key and host-key rule; the script's file names are quoted for the
//! remote shell (they come from a copy's manifest: untrusted).

use std::path::PathBuf;

/// Where and as whom an SFTP destination's server is reached with ssh, to hash a file there
/// (a true at-rest proof of a copy without downloading it).
pub struct Login {
    host: String,
    port: String,
    user: Option<String>,
    key: Option<PathBuf>,
    /// ssh's StrictHostKeyChecking, from `known_hosts_strategy`.
    host_keys: &'static str,
}

/// What the server found of a file it was asked to hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hashed {
    Found {
        size: u64,
        sha256: String,
    },
    Missing,
    /// A symbolic link: refused, never followed.
    Link,
    /// A folder or a special file where a file belongs.
    NotAFile,
    /// There, but the server could not read it (to be read over SFTP, which says why).
    Unreadable,
}

impl Login {
    /// From an SFTP destination's resolved options (endpoint, user, key,
    /// known_hosts_strategy).
    pub fn from_options(options: &[(String, String)]) -> Option<Login> {
        let get = |key: &str| {
            options
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let endpoint = get("endpoint")?;
        let address = endpoint.strip_prefix("ssh://").unwrap_or(&endpoint);
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => (host, port),
            _ => (address, "22"),
        };
        let host_keys = match get("known_hosts_strategy").as_deref() {
            Some("accept") => "no",
            Some("add") => "accept-new",
            _ => "yes",
        };
        Some(Login {
            host: host.trim_end_matches('/').to_owned(),
            port: port.to_owned(),
            user: get("user"),
            key: get("key").map(PathBuf::from),
            host_keys,
        })
    }

    /// `script` run by the server's `sh`, its output. The login shell (which may be fish
    /// or csh) sees only `echo <base64> | base64 -d | sh`: words every shell reads alike;
    /// the script, with the file names in it, reaches `sh` as data.
    fn run(&self, script: &str, io_stall: Option<std::time::Duration>) -> crate::Result<String> {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(script);
        let command = format!("echo {encoded} | base64 -d | sh");
        let mut ssh = super::process::Spec::new("ssh");
        ssh.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .arg("-o")
            .arg(format!("StrictHostKeyChecking={}", self.host_keys))
            .args(["-p", &self.port])
            .io_stall(io_stall);
        if let Some(key) = &self.key {
            ssh.args(["-o", "IdentitiesOnly=yes", "-i"]).arg(key);
        }
        if let Some(user) = &self.user {
            ssh.args(["-l", user]);
        }
        ssh.arg(&self.host).arg("--").arg(command);
        let (finished, out) = ssh.output()?;
        finished.expect(&[0])?;
        Ok(out)
    }

    /// Whether the server's shell can hash files (`wc` and `sha256sum`).
    pub fn can_hash(&self, io_stall: Option<std::time::Duration>) -> bool {
        let probe =
            "command -v wc >/dev/null && command -v sha256sum >/dev/null && echo yes; exit 0";
        self.run(probe, io_stall)
            .is_ok_and(|out| out.trim() == "yes")
    }

    /// The size and SHA-256 of each of `paths` (as the SFTP session names them), computed by
    /// the server in one ssh session.
    pub fn hash(
        &self,
        paths: &[String],
        io_stall: Option<std::time::Duration>,
    ) -> crate::Result<Vec<Hashed>> {
        let quoted: Vec<String> = paths
            .iter()
            .map(|p| format!("'{}'", p.replace('\'', "'\\''")))
            .collect();
        // One line per file, whatever happens to it; the script itself always ends well
        // (ssh failing is then the connection's failure, not a file's).
        let script = format!(
            "for f in {}; do if [ -L \"$f\" ]; then echo link; elif [ ! -e \"$f\" ]; then echo missing; \
             elif [ ! -f \"$f\" ]; then echo not-a-file; \
             else s=$(wc -c < \"$f\" 2>/dev/null) && h=$(sha256sum < \"$f\" 2>/dev/null) && echo \"$s $h\" || echo unreadable; fi; done; exit 0",
            quoted.join(" ")
        );
        let script = match crate::fault::shell_pause() {
            Some(pause) => format!("sleep {pause}; {script}"),
            None => script,
        };
        let out = self.run(&script, io_stall)?;
        let hashed: Option<Vec<Hashed>> = out.lines().map(hashed).collect();
        match hashed {
            Some(hashed) if hashed.len() == paths.len() => Ok(hashed),
            _ => Err(crate::Error::Failed(format!(
                "the server's answer to hashing {} file(s) is not understood: {:?}",
                paths.len(),
                out.chars().take(200).collect::<String>()
            ))),
        }
    }
}

/// One line of the server's answer: "link", "missing", or "<size> <sha256>  -".
fn hashed(line: &str) -> Option<Hashed> {
    let mut words = line.split_whitespace();
    match words.next()? {
        "link" => Some(Hashed::Link),
        "missing" => Some(Hashed::Missing),
        "not-a-file" => Some(Hashed::NotAFile),
        "unreadable" => Some(Hashed::Unreadable),
        size => {
            let size = size.parse().ok()?;
            let sha256 = words.next()?;
            let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
            hex.then(|| Hashed::Found {
                size,
                sha256: sha256.to_ascii_lowercase(),
            })
        }
    }
}
