//! What the model is told about the project before the first turn
//! (codex-compat §7.1–§7.2): the AGENTS.md instructions, the
//! `<environment_context>` block, and git facts for clients.

pub mod agents_md;
pub mod environment;
pub mod git;

use std::path::Path;

pub use agents_md::{AgentsMdOptions, ProjectDoc, agents_md_message_text, discover};
pub use environment::{EnvironmentFacts, environment_context};
pub use git::{GitInfo, git_info};

/// Everything GetProjectContext returns, for a canonical `cwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectContext {
    pub doc: Option<ProjectDoc>,
    pub git: GitInfo,
    pub environment_context: String,
}

/// Gathers the project context. Blocking: reads files.
pub fn gather(cwd: &Path, options: &AgentsMdOptions, facts: &EnvironmentFacts) -> ProjectContext {
    ProjectContext {
        doc: discover(cwd, options),
        git: git_info(cwd),
        environment_context: environment_context(cwd, facts),
    }
}
