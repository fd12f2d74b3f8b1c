//! The definition's `before` and `after` commands (the seed's PREREQ/POSTREQ), each through
//! `sh -c` under the same supervision as dar: own process group, timeout, SIGTERM then SIGKILL.

use crate::config::Hooks;
use crate::error::{Error, Result};
use crate::set::Level;
use crate::tools::process::Spec;

/// Run `commands` in order; the first failure stops them and is returned.
pub fn run(
    hooks: &Hooks,
    commands: &[String],
    definition: &str,
    level: Level,
    outcome: Option<&str>,
) -> Result<()> {
    for command in commands {
        tracing::info!(definition, "hook: {command}");
        let mut s = Spec::new("/bin/sh");
        s.arg("-c")
            .arg(command)
            .inherit_env()
            .timeout(Some(hooks.timeout.0))
            .env("DARVAULT_DEFINITION", definition)
            .env("DARVAULT_LEVEL", level.to_string());
        if let Some(outcome) = outcome {
            s.env("DARVAULT_OUTCOME", outcome);
        }
        let (finished, _) = s.output()?;
        finished
            .expect(&[0])
            .map_err(|e| Error::Failed(format!("hook `{command}` failed: {e}")))?;
    }
    Ok(())
}
