//! What a session's git source may name, checked where a client's request
//! arrives (session-api) and again where git runs (the tool-runner).

/// A ref of plain characters — letters, digits, `.`, `_`, `/`, `-` — that
/// git cannot read as an option (no leading `-`) or a range (no `..`), at
/// most 256 bytes; empty means the default branch.
pub fn is_plain_ref(git_ref: &str) -> bool {
    git_ref.len() <= 256
        && !git_ref.starts_with('-')
        && !git_ref.contains("..")
        && git_ref
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_cannot_be_options_ranges_or_odd_text() {
        for good in ["", "main", "v1.2.3", "feature/x_y", "0123abcd"] {
            assert!(is_plain_ref(good), "{good}");
        }
        for bad in [
            "--upload-pack=x",
            "-b",
            "a..b",
            "a b",
            "a;b",
            "$(x)",
            "a\nb",
        ] {
            assert!(!is_plain_ref(bad), "{bad}");
        }
        assert!(!is_plain_ref(&"a".repeat(257)));
    }
}
