//! Finds a chunk's lines in a file (Codex:
//! `codex-rs/apply-patch/src/seek_sequence.rs`). Four passes, each
//! looser than the last, so a patch whose context differs from the file
//! only in trailing spaces, indentation or typographic punctuation still
//! applies — but an exact match always wins over a fuzzy one further up.

/// The first index ≥ `start` where `pattern` matches `lines`. With `eof`,
/// only the last possible position is tried. An empty pattern matches at
/// `start`; a pattern longer than the file never matches.
pub fn seek_sequence(
    lines: &[String],
    pattern: &[String],
    start: usize,
    eof: bool,
) -> Option<usize> {
    if pattern.is_empty() {
        return Some(start);
    }
    if pattern.len() > lines.len() {
        return None;
    }
    let last_start = lines.len() - pattern.len();
    let first_start = if eof { last_start } else { start };
    let passes: [fn(&str, &str) -> bool; 4] = [
        |a, b| a == b,
        |a, b| a.trim_end() == b.trim_end(),
        |a, b| a.trim() == b.trim(),
        |a, b| normalise(a) == normalise(b),
    ];
    passes.iter().find_map(|same| {
        (first_start..=last_start).find(|&at| {
            lines[at..at + pattern.len()]
                .iter()
                .zip(pattern)
                .all(|(line, want)| same(line, want))
        })
    })
}

/// Trimmed, with typographic dashes, quotes and spaces made ASCII: what
/// models often type instead of what the file holds (or the reverse).
fn normalise(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| match c {
            '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => '"',
            '\u{00A0}' | '\u{2002}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => ' ',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_pass() {
        let file = v(&["a", "b", "c", "b"]);
        assert_eq!(seek_sequence(&file, &v(&["b"]), 0, false), Some(1));
        assert_eq!(seek_sequence(&file, &v(&["b"]), 2, false), Some(3));
        assert_eq!(seek_sequence(&file, &v(&["b", "c"]), 0, false), Some(1));
        assert_eq!(seek_sequence(&file, &v(&["x"]), 0, false), None);
    }

    #[test]
    fn trim_end_pass() {
        let file = v(&["fn a() {  ", "x\r"]);
        assert_eq!(
            seek_sequence(&file, &v(&["fn a() {", "x"]), 0, false),
            Some(0)
        );
    }

    #[test]
    fn trim_pass() {
        let file = v(&["    indented", "\tx"]);
        assert_eq!(
            seek_sequence(&file, &v(&["indented", "x"]), 0, false),
            Some(0)
        );
    }

    #[test]
    fn punctuation_pass() {
        let file = v(&["let s = \u{201C}hi\u{201D}; // it\u{2019}s \u{2014} ok\u{00A0}"]);
        assert_eq!(
            seek_sequence(&file, &v(&["let s = \"hi\"; // it's - ok"]), 0, false),
            Some(0)
        );
        // And the other way round.
        let file = v(&["a - b"]);
        assert_eq!(
            seek_sequence(&file, &v(&["a \u{2212} b"]), 0, false),
            Some(0)
        );
    }

    #[test]
    fn an_earlier_fuzzy_match_loses_to_a_later_exact_one() {
        let file = v(&["x ", "x"]);
        assert_eq!(seek_sequence(&file, &v(&["x"]), 0, false), Some(1));
    }

    #[test]
    fn eof_tries_only_the_last_position() {
        let file = v(&["a", "b", "a"]);
        assert_eq!(seek_sequence(&file, &v(&["a"]), 0, true), Some(2));
        assert_eq!(seek_sequence(&file, &v(&["b"]), 0, true), None);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(seek_sequence(&v(&["a"]), &[], 1, false), Some(1));
        assert_eq!(seek_sequence(&v(&["a"]), &v(&["a", "b"]), 0, false), None);
        assert_eq!(seek_sequence(&v(&["a"]), &v(&["a"]), 5, false), None);
    }
}
