//! Supervised external programs: one process runner, and the tools built on top of it.

pub mod dar;
pub mod process;
pub mod secret;
