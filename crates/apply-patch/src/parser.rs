//! Parses the apply_patch envelope (Codex:
//! `codex-rs/apply-patch/src/parser.rs`) into hunks. Pure:
//! nothing here looks at the filesystem.
//!
//! The parser is deliberately lenient in exactly Codex's ways, because
//! models are trained against that parser: a stricter one would reject
//! patches Codex accepts, a looser one would apply patches Codex rejects.

const BEGIN_PATCH: &str = "*** Begin Patch";
const END_PATCH: &str = "*** End Patch";
const ADD_FILE: &str = "*** Add File: ";
const DELETE_FILE: &str = "*** Delete File: ";
const UPDATE_FILE: &str = "*** Update File: ";
const MOVE_TO: &str = "*** Move to: ";
const END_OF_FILE: &str = "*** End of File";
const CONTEXT_MARKER: &str = "@@ ";
const EMPTY_CONTEXT_MARKER: &str = "@@";
/// Heredoc openers a model sometimes leaves around the patch (Codex
/// accepts them in lenient mode).
const HEREDOC_OPENERS: [&str; 3] = ["<<EOF", "<<'EOF'", "<<\"EOF\""];

/// One file operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hunk {
    /// Creates (or overwrites) a file with `contents`.
    Add {
        path: String,
        contents: String,
    },
    Delete {
        path: String,
    },
    /// Edits a file in place, optionally moving it.
    Update {
        path: String,
        move_path: Option<String>,
        chunks: Vec<Chunk>,
    },
}

impl Hunk {
    /// The path as the patch spells it.
    pub fn path(&self) -> &str {
        match self {
            Self::Add { path, .. } | Self::Delete { path } | Self::Update { path, .. } => path,
        }
    }
}

/// One `@@` section of an Update hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The `@@ <line>` anchor to find before the old lines.
    pub change_context: Option<String>,
    /// Context and `-` lines: what must be found.
    pub old_lines: Vec<String>,
    /// Context and `+` lines: what replaces it.
    pub new_lines: Vec<String>,
    /// `*** End of File`: the old lines must end the file.
    pub is_end_of_file: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Invalid patch: {0}")]
    InvalidPatch(String),
    #[error("Invalid patch hunk on line {line_number}: {message}")]
    InvalidHunk { message: String, line_number: usize },
}

/// Parses a whole patch. Zero hunks is not a parse error: whether an empty
/// patch is acceptable is the caller's decision (Codex rejects it later).
pub fn parse_patch(patch: &str) -> Result<Vec<Hunk>, ParseError> {
    let lines: Vec<&str> = patch.trim().lines().collect();
    let body = match check_boundaries(&lines) {
        Ok(body) => body,
        Err(err) => strip_heredoc(&lines).ok_or(err)?,
    };

    let mut hunks = Vec::new();
    let mut remaining = body;
    // Line 1 is `*** Begin Patch`.
    let mut line_number = 2;
    while !remaining.is_empty() {
        let (hunk, consumed) = parse_hunk(remaining, line_number)?;
        hunks.push(hunk);
        line_number += consumed;
        remaining = &remaining[consumed..];
    }
    Ok(hunks)
}

/// The lines between the markers, if the first and last lines are the
/// markers (compared trimmed).
fn check_boundaries<'a>(lines: &'a [&'a str]) -> Result<&'a [&'a str], ParseError> {
    let first = lines.first().map(|line| line.trim());
    let last = lines.last().map(|line| line.trim());
    match (first, last) {
        (Some(BEGIN_PATCH), Some(END_PATCH)) if lines.len() >= 2 => Ok(&lines[1..lines.len() - 1]),
        (Some(first), _) if first != BEGIN_PATCH => Err(ParseError::InvalidPatch(
            "The first line of the patch must be '*** Begin Patch'".to_string(),
        )),
        _ => Err(ParseError::InvalidPatch(
            "The last line of the patch must be '*** End Patch'".to_string(),
        )),
    }
}

/// `<<'EOF'` … `EOF` around a patch: the lines inside, if they are a patch.
/// Needs at least four lines (two markers, two patch lines).
fn strip_heredoc<'a>(lines: &'a [&'a str]) -> Option<&'a [&'a str]> {
    let (first, last) = (lines.first()?, lines.last()?);
    if lines.len() >= 4 && HEREDOC_OPENERS.contains(first) && last.ends_with("EOF") {
        check_boundaries(&lines[1..lines.len() - 1]).ok()
    } else {
        None
    }
}

/// Parses the hunk at the start of `lines`; returns it and how many lines it
/// used.
fn parse_hunk(lines: &[&str], line_number: usize) -> Result<(Hunk, usize), ParseError> {
    // Headers are recognised trimmed; their paths are what follows the marker.
    let header = lines.first().map_or("", |line| line.trim());
    if let Some(path) = header.strip_prefix(ADD_FILE) {
        let mut contents = String::new();
        let mut consumed = 1;
        for line in &lines[1..] {
            let Some(text) = line.strip_prefix('+') else {
                break;
            };
            contents.push_str(text);
            contents.push('\n');
            consumed += 1;
        }
        let path = path.to_string();
        return Ok((Hunk::Add { path, contents }, consumed));
    }
    if let Some(path) = header.strip_prefix(DELETE_FILE) {
        let path = path.to_string();
        return Ok((Hunk::Delete { path }, 1));
    }
    if let Some(path) = header.strip_prefix(UPDATE_FILE) {
        return parse_update(path, lines, line_number);
    }
    Err(ParseError::InvalidHunk {
        message: format!(
            "'{header}' is not a valid hunk header. Valid hunk headers: '*** Add File: {{path}}', '*** Delete File: {{path}}', '*** Update File: {{path}}'"
        ),
        line_number,
    })
}

fn parse_update(
    path: &str,
    lines: &[&str],
    line_number: usize,
) -> Result<(Hunk, usize), ParseError> {
    let mut remaining = &lines[1..];
    let mut consumed = 1;
    let move_path = remaining
        .first()
        .and_then(|line| line.strip_prefix(MOVE_TO))
        .map(str::to_string);
    if move_path.is_some() {
        remaining = &remaining[1..];
        consumed += 1;
    }

    let mut chunks = Vec::new();
    while let Some(line) = remaining.first() {
        // Blank lines between chunks are skipped.
        if line.trim().is_empty() {
            remaining = &remaining[1..];
            consumed += 1;
            continue;
        }
        // The next hunk header (or the end marker's like) ends this hunk.
        if line.starts_with('*') {
            break;
        }
        let (chunk, used) = parse_chunk(remaining, line_number + consumed, chunks.is_empty())?;
        chunks.push(chunk);
        consumed += used;
        remaining = &remaining[used..];
    }

    if chunks.is_empty() {
        return Err(ParseError::InvalidHunk {
            message: format!("Update file hunk for path '{path}' is empty"),
            line_number,
        });
    }
    let hunk = Hunk::Update {
        path: path.to_string(),
        move_path,
        chunks,
    };
    Ok((hunk, consumed))
}

/// Parses one chunk; `first_in_hunk` allows the leading `@@` to be missing.
fn parse_chunk(
    lines: &[&str],
    line_number: usize,
    first_in_hunk: bool,
) -> Result<(Chunk, usize), ParseError> {
    let no_lines = |line_number| ParseError::InvalidHunk {
        message: "Update hunk does not contain any lines".to_string(),
        line_number,
    };
    let first = lines.first().copied().unwrap_or_default();
    let (change_context, start) = if first == EMPTY_CONTEXT_MARKER {
        (None, 1)
    } else if let Some(context) = first.strip_prefix(CONTEXT_MARKER) {
        (Some(context.to_string()), 1)
    } else if first_in_hunk {
        (None, 0)
    } else {
        return Err(ParseError::InvalidHunk {
            message: format!(
                "Expected update hunk to start with a @@ context marker, got: '{first}'"
            ),
            line_number,
        });
    };
    if start >= lines.len() {
        return Err(no_lines(line_number + 1));
    }

    let mut chunk = Chunk {
        change_context,
        old_lines: Vec::new(),
        new_lines: Vec::new(),
        is_end_of_file: false,
    };
    let mut parsed = 0;
    for line in &lines[start..] {
        if *line == END_OF_FILE {
            if parsed == 0 {
                return Err(no_lines(line_number + 1));
            }
            chunk.is_end_of_file = true;
            parsed += 1;
            break;
        }
        let mut chars = line.chars();
        match chars.next() {
            // An empty line inside a chunk is an empty context line.
            None => {
                chunk.old_lines.push(String::new());
                chunk.new_lines.push(String::new());
            }
            Some(' ') => {
                chunk.old_lines.push(chars.as_str().to_string());
                chunk.new_lines.push(chars.as_str().to_string());
            }
            Some('+') => chunk.new_lines.push(chars.as_str().to_string()),
            Some('-') => chunk.old_lines.push(chars.as_str().to_string()),
            Some(_) => {
                if parsed == 0 {
                    return Err(ParseError::InvalidHunk {
                        message: format!(
                            "Unexpected line found in update hunk: '{line}'. Every line should start with ' ' (context line), '+' (added line), or '-' (removed line)"
                        ),
                        line_number: line_number + 1,
                    });
                }
                // Anything else starts the next chunk or hunk.
                break;
            }
        }
        parsed += 1;
    }
    Ok((chunk, parsed + start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(ctx: Option<&str>, old: &[&str], new: &[&str], eof: bool) -> Chunk {
        Chunk {
            change_context: ctx.map(str::to_string),
            old_lines: old.iter().map(|s| s.to_string()).collect(),
            new_lines: new.iter().map(|s| s.to_string()).collect(),
            is_end_of_file: eof,
        }
    }

    #[test]
    fn parses_every_hunk_kind() {
        let hunks = parse_patch(
            "*** Begin Patch\n\
             *** Add File: path/add.py\n\
             +abc\n\
             +def\n\
             *** Delete File: path/delete.py\n\
             *** Update File: path/update.py\n\
             *** Move to: path/update2.py\n\
             @@ def f():\n\
             -    pass\n\
             +    return 123\n\
             *** End Patch",
        )
        .unwrap();
        assert_eq!(
            hunks,
            vec![
                Hunk::Add {
                    path: "path/add.py".into(),
                    contents: "abc\ndef\n".into()
                },
                Hunk::Delete {
                    path: "path/delete.py".into()
                },
                Hunk::Update {
                    path: "path/update.py".into(),
                    move_path: Some("path/update2.py".into()),
                    chunks: vec![chunk(
                        Some("def f():"),
                        &["    pass"],
                        &["    return 123"],
                        false
                    )],
                },
            ]
        );
    }

    #[test]
    fn several_chunks_eof_marker_and_missing_first_marker() {
        let hunks = parse_patch(
            "*** Begin Patch\n*** Update File: f\n import a\n+b\n\n@@ fn x\n-c\n+d\n*** End of File\n*** End Patch\n",
        )
        .unwrap();
        let Hunk::Update { chunks, .. } = &hunks[0] else {
            panic!("{hunks:?}")
        };
        assert_eq!(
            chunks,
            &vec![
                chunk(None, &["import a", ""], &["import a", "b", ""], false),
                chunk(Some("fn x"), &["c"], &["d"], true),
            ]
        );
    }

    #[test]
    fn leniency() {
        // Surrounding whitespace, padded markers and headers.
        let hunks =
            parse_patch("\n  *** Begin Patch  \n  *** Add File: a  \n+x\n *** End Patch \n\n")
                .unwrap();
        assert_eq!(
            hunks,
            vec![Hunk::Add {
                path: "a".into(),
                contents: "x\n".into()
            }]
        );
        // A heredoc wrapper is stripped.
        for opener in ["<<EOF", "<<'EOF'", "<<\"EOF\""] {
            let hunks = parse_patch(&format!(
                "{opener}\n*** Begin Patch\n*** Delete File: d\n*** End Patch\nEOF"
            ))
            .unwrap();
            assert_eq!(hunks, vec![Hunk::Delete { path: "d".into() }]);
        }
        // An add hunk with no lines makes an empty file.
        assert_eq!(
            parse_patch("*** Begin Patch\n*** Add File: e\n*** End Patch").unwrap(),
            vec![Hunk::Add {
                path: "e".into(),
                contents: String::new()
            }]
        );
        // Zero hunks parse; rejecting them is the caller's business.
        assert_eq!(
            parse_patch("*** Begin Patch\n*** End Patch").unwrap(),
            vec![]
        );
    }

    #[test]
    fn error_texts() {
        let err = |patch: &str| parse_patch(patch).unwrap_err().to_string();
        assert_eq!(
            err("bad"),
            "Invalid patch: The first line of the patch must be '*** Begin Patch'"
        );
        assert_eq!(
            err("*** Begin Patch\nbad"),
            "Invalid patch: The last line of the patch must be '*** End Patch'"
        );
        assert_eq!(
            err(""),
            "Invalid patch: The last line of the patch must be '*** End Patch'"
        );
        assert_eq!(
            err("*** Begin Patch\n*** Frobnicate File: foo\n*** End Patch"),
            "Invalid patch hunk on line 2: '*** Frobnicate File: foo' is not a valid hunk header. Valid hunk headers: '*** Add File: {path}', '*** Delete File: {path}', '*** Update File: {path}'"
        );
        assert_eq!(
            err("*** Begin Patch\n*** Update File: test.py\n*** End Patch"),
            "Invalid patch hunk on line 2: Update file hunk for path 'test.py' is empty"
        );
        assert_eq!(
            err("*** Begin Patch\n*** Update File: a\n@@\n-x\n+y\nbad line\n*** End Patch"),
            "Invalid patch hunk on line 6: Expected update hunk to start with a @@ context marker, got: 'bad line'"
        );
        assert_eq!(
            err("*** Begin Patch\n*** Update File: a\n@@\nbad line\n*** End Patch"),
            "Invalid patch hunk on line 4: Unexpected line found in update hunk: 'bad line'. Every line should start with ' ' (context line), '+' (added line), or '-' (removed line)"
        );
        assert_eq!(
            err("*** Begin Patch\n*** Update File: a\n@@\n*** End of File\n*** End Patch"),
            "Invalid patch hunk on line 4: Update hunk does not contain any lines"
        );
    }
}
