//! The base instructions sent when a request brings none. They belong to the
//! model side (like Codex's model catalog), so the workflow does not carry
//! them in every activity payload.

use crate::controls::Personality;

pub const BASE_INSTRUCTIONS: &str =
    "You are a coding agent running in Keel, a durable harness for Codex-style agents. \
You help the user with software engineering tasks in their workspace.

- Use the tools you are given to inspect and change the workspace; do not guess file contents.
- Prefer running commands with an explicit working directory over `cd`.
- Keep changes minimal and focused on the user's request; follow the repository's conventions.
- When a command fails, read its output and fix the cause instead of retrying blindly.
- When you are done, reply with a short summary of what you did and anything left to do.";

/// The base instructions with the personality's tone section, if any.
pub fn base_instructions(personality: Option<Personality>) -> String {
    let tone = match personality {
        None | Some(Personality::None) => return BASE_INSTRUCTIONS.to_string(),
        Some(Personality::Friendly) => FRIENDLY,
        Some(Personality::Pragmatic) => PRAGMATIC,
    };
    format!("{BASE_INSTRUCTIONS}\n\n# Personality\n\n{tone}")
}

const FRIENDLY: &str = "Be warm and encouraging. Explain what you are doing in plain words, \
acknowledge the user's goals, and offer next steps the user might want; stay accurate and never pad answers.";

const PRAGMATIC: &str = "Be direct and economical. Lead with the result, skip pleasantries, \
state trade-offs plainly, and keep explanations to what the user needs to act.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personality_adds_a_tone_section() {
        assert_eq!(base_instructions(None), BASE_INSTRUCTIONS);
        assert_eq!(
            base_instructions(Some(Personality::None)),
            BASE_INSTRUCTIONS
        );
        let friendly = base_instructions(Some(Personality::Friendly));
        assert!(friendly.starts_with(BASE_INSTRUCTIONS));
        assert!(friendly.contains("# Personality\n\nBe warm"));
        assert!(base_instructions(Some(Personality::Pragmatic)).contains("Be direct"));
    }
}
