//! `read_file` (Codex: `codex-rs/core/src/tools/handlers/read_file.rs`, the last upstream definition): numbered
//! lines of a file, either a plain slice or the indentation block around an
//! anchor line — a structural read without a language parser.

use std::collections::VecDeque;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ToolContext, ToolOutcome, parse_arguments};
use crate::sandbox::job::{ConfinedJob, Job};

/// Lines are cut to this many bytes (at a character boundary).
const MAX_LINE_BYTES: usize = 500;
/// read_file reads at most this much of a file (its lines beyond are out of
/// reach), so a huge file cannot exhaust the tool-runner's memory.
pub const MAX_READ_BYTES: u64 = 32 * 1024 * 1024;
/// A tab counts as this many columns of indentation.
const TAB_WIDTH: usize = 4;
/// Lines starting with these count as comments (headers of a block).
const COMMENT_PREFIXES: [&str; 3] = ["#", "//", "--"];

#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct ReadFileParams {
    pub file_path: String,
    #[serde(default = "one")]
    pub offset: usize,
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub mode: ReadMode,
    pub indentation: Option<IndentationParams>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    #[default]
    Slice,
    Indentation,
}

#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, Clone)]
pub struct IndentationParams {
    pub anchor_line: Option<usize>,
    /// How many enclosing levels to include; 0 = all.
    #[serde(default)]
    pub max_levels: usize,
    #[serde(default)]
    pub include_siblings: bool,
    #[serde(default = "yes")]
    pub include_header: bool,
    pub max_lines: Option<usize>,
}

impl Default for IndentationParams {
    fn default() -> Self {
        Self {
            anchor_line: None,
            max_levels: 0,
            include_siblings: false,
            include_header: true,
            max_lines: None,
        }
    }
}

fn one() -> usize {
    1
}
fn default_limit() -> usize {
    2000
}
fn yes() -> bool {
    true
}

pub async fn run(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    match read(ctx, arguments).await {
        Ok(text) => ToolOutcome::success(text),
        Err(text) => ToolOutcome::failure(text),
    }
}

async fn read(ctx: &ToolContext<'_>, arguments: &str) -> Result<String, String> {
    let params: ReadFileParams = parse_arguments(arguments)?;
    if params.offset == 0 {
        return Err("offset must be a 1-indexed line number".to_string());
    }
    if params.limit == 0 {
        return Err("limit must be greater than zero".to_string());
    }
    let path = Path::new(&params.file_path);
    if !path.is_absolute() {
        return Err("file_path must be an absolute path".to_string());
    }
    let path = match ctx.workspace.resolve_existing(ctx.cwd, path) {
        Ok(path) => path,
        Err(err) if err.is_denied() => return Err(err.to_string()),
        // Let the read report a missing file the way Codex words it.
        Err(_) => path.to_path_buf(),
    };
    let job = ReadFileJob { path, params };
    // Under a sandbox the read happens confined, seeing what a sandboxed
    // command would: no other process's /proc, no hidden path.
    match ctx.sandbox.confinement() {
        Some(confinement) => ctx
            .executor
            .run_job("read_file", job, ctx.cwd, &confinement)
            .await
            .map_err(|err| format!("failed to read file: {err}"))?,
        None => tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|err| format!("failed to read file: {err}"))?,
    }
}

/// Reads a file and renders the requested lines.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadFileJob {
    path: PathBuf,
    params: ReadFileParams,
}

impl ConfinedJob for ReadFileJob {
    type Output = Result<String, String>;

    fn run(self) -> Self::Output {
        use std::io::Read as _;
        let failed = |err: std::io::Error| format!("failed to read file: {err}");
        // Opening a FIFO for reading would wait for a writer; a device
        // (`/dev/zero`) never ends. Only regular files are read.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(failed)?;
        let size = file.metadata().map_err(failed)?;
        if size.is_dir() {
            // As a plain read reports it (Codex's text).
            return Err(failed(std::io::Error::from_raw_os_error(libc::EISDIR)));
        }
        if !size.is_file() {
            return Err("failed to read file: not a regular file".to_string());
        }
        let mut bytes = Vec::new();
        file.take(MAX_READ_BYTES)
            .read_to_end(&mut bytes)
            .map_err(failed)?;
        let cut = size.len() > MAX_READ_BYTES;
        let lines = split_lines(&bytes);
        let params = self.params;
        let collected = match params.mode {
            ReadMode::Slice => slice(&lines, params.offset, params.limit).map_err(|e| {
                if cut {
                    format!(
                        "{e}: read_file reads the first {} MiB of this {}-byte file",
                        MAX_READ_BYTES / (1024 * 1024),
                        size.len()
                    )
                } else {
                    e
                }
            })?,
            ReadMode::Indentation => indentation_block(
                &lines,
                params.offset,
                params.limit,
                &params.indentation.unwrap_or_default(),
            )?,
        };
        Ok(collected.join("\n"))
    }

    fn into_job(self) -> Job {
        Job::ReadFile(self)
    }
}

/// One line of the file.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    raw: String,
    display: String,
}

impl Line {
    fn is_blank(&self) -> bool {
        self.raw.trim().is_empty()
    }
    fn is_comment(&self) -> bool {
        let trimmed = self.raw.trim();
        COMMENT_PREFIXES.iter().any(|p| trimmed.starts_with(p))
    }
    fn indent(&self) -> usize {
        self.raw
            .chars()
            .take_while(|c| matches!(c, ' ' | '\t'))
            .map(|c| if c == '\t' { TAB_WIDTH } else { 1 })
            .sum()
    }
    fn render(&self) -> String {
        format!("L{}: {}", self.number, self.display)
    }
}

/// Lines split on `\n` with a trailing `\r` dropped; invalid UTF-8 decoded
/// lossily.
fn split_lines(bytes: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (mut line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let raw = String::from_utf8_lossy(line).into_owned();
        let display = raw[..raw.floor_char_boundary(MAX_LINE_BYTES)].to_string();
        lines.push(Line {
            number: lines.len() + 1,
            raw,
            display,
        });
        rest = next;
    }
    lines
}

fn slice(lines: &[Line], offset: usize, limit: usize) -> Result<Vec<String>, String> {
    if offset > lines.len() {
        return Err("offset exceeds file length".to_string());
    }
    Ok(lines[offset - 1..]
        .iter()
        .take(limit)
        .map(Line::render)
        .collect())
}

/// The block around the anchor: lines at or above the anchor's indentation
/// (less `max_levels` levels), growing up and down alternately.
fn indentation_block(
    lines: &[Line],
    offset: usize,
    limit: usize,
    options: &IndentationParams,
) -> Result<Vec<String>, String> {
    let anchor_line = options.anchor_line.unwrap_or(offset);
    if anchor_line == 0 {
        return Err("anchor_line must be a 1-indexed line number".to_string());
    }
    let guard_limit = options.max_lines.unwrap_or(limit);
    if guard_limit == 0 {
        return Err("max_lines must be greater than zero".to_string());
    }
    if lines.is_empty() || anchor_line > lines.len() {
        return Err("anchor_line exceeds file length".to_string());
    }

    let anchor = anchor_line - 1;
    // A blank line takes the indentation of the line before it, so it never
    // ends a block on its own.
    let mut indents = Vec::with_capacity(lines.len());
    let mut previous = 0;
    for line in lines {
        if !line.is_blank() {
            previous = line.indent();
        }
        indents.push(previous);
    }
    let min_indent = if options.max_levels == 0 {
        0
    } else {
        indents[anchor].saturating_sub(options.max_levels * TAB_WIDTH)
    };
    let final_limit = limit.min(guard_limit).min(lines.len());
    if final_limit == 1 {
        return Ok(vec![lines[anchor].render()]);
    }

    let mut out: VecDeque<&Line> = VecDeque::from([&lines[anchor]]);
    // Next candidates above and below; `None` once that side has stopped.
    let mut up = anchor.checked_sub(1);
    let mut down = Some(anchor + 1).filter(|i| *i < lines.len());
    let mut up_at_min = 0;
    let mut down_at_min = 0;
    while out.len() < final_limit {
        let mut progressed = false;
        if let Some(i) = up {
            if indents[i] >= min_indent {
                let mut take = true;
                // Only one line at the minimum indentation above (the block's
                // header), plus comments directly above it, unless siblings
                // are wanted.
                if indents[i] == min_indent && !options.include_siblings {
                    let header_comment = options.include_header && lines[i].is_comment();
                    if header_comment || up_at_min == 0 {
                        up_at_min += 1;
                    } else {
                        take = false;
                    }
                }
                if take {
                    out.push_front(&lines[i]);
                    progressed = true;
                    up = i.checked_sub(1);
                } else {
                    up = None;
                }
                if out.len() >= final_limit {
                    break;
                }
            } else {
                up = None;
            }
        }
        if let Some(j) = down {
            if indents[j] >= min_indent {
                let mut take = true;
                // Only one line at the minimum indentation below: the
                // block's closing line.
                if indents[j] == min_indent && !options.include_siblings {
                    if down_at_min > 0 {
                        take = false;
                    }
                    down_at_min += 1;
                }
                if take {
                    out.push_back(&lines[j]);
                    progressed = true;
                    down = Some(j + 1).filter(|n| *n < lines.len());
                } else {
                    down = None;
                }
            } else {
                down = None;
            }
        }
        if !progressed {
            break;
        }
    }
    while out.front().is_some_and(|line| line.is_blank()) {
        out.pop_front();
    }
    while out.back().is_some_and(|line| line.is_blank()) {
        out.pop_back();
    }
    Ok(out.into_iter().map(Line::render).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Line> {
        split_lines(text.as_bytes())
    }

    #[test]
    fn parses_arguments_with_defaults() {
        let p: ReadFileParams = parse_arguments(r#"{"file_path":"/a"}"#).unwrap();
        assert_eq!((p.offset, p.limit, p.mode), (1, 2000, ReadMode::Slice));
        assert!(p.indentation.is_none());
        let p: ReadFileParams = parse_arguments(
            r#"{"file_path":"/a","offset":3,"limit":4,"mode":"indentation",
                "indentation":{"anchor_line":5,"max_levels":1,"include_siblings":true,"include_header":false,"max_lines":9}}"#,
        )
        .unwrap();
        assert_eq!(p.mode, ReadMode::Indentation);
        assert_eq!(
            p.indentation.unwrap(),
            IndentationParams {
                anchor_line: Some(5),
                max_levels: 1,
                include_siblings: true,
                include_header: false,
                max_lines: Some(9)
            }
        );
        let err =
            parse_arguments::<ReadFileParams>(r#"{"file_path":"/a","mode":"all"}"#).unwrap_err();
        assert!(err.contains("unknown variant `all`"), "{err}");
        let err = parse_arguments::<ReadFileParams>(r#"{"offset":1}"#).unwrap_err();
        assert!(
            err.starts_with("failed to parse function arguments: missing field `file_path`"),
            "{err}"
        );
    }

    #[test]
    fn slice_numbers_cuts_and_decodes() {
        let mut bytes = b"a\r\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 600));
        bytes.extend_from_slice("\n\u{e9}t\u{e9}\nlast".as_bytes());
        let lines = split_lines(&bytes);
        let got = slice(&lines, 1, 10).unwrap();
        assert_eq!(
            got,
            vec![
                "L1: a".to_string(),
                format!("L2: {}", "x".repeat(500)),
                "L3: \u{e9}t\u{e9}".to_string(),
                "L4: last".to_string(),
            ]
        );
        assert_eq!(slice(&lines, 3, 1).unwrap(), vec!["L3: \u{e9}t\u{e9}"]);
        assert_eq!(
            slice(&lines, 5, 1).unwrap_err(),
            "offset exceeds file length"
        );
        let lossy = split_lines(b"ok\xff\n");
        assert_eq!(slice(&lossy, 1, 1).unwrap(), vec!["L1: ok\u{fffd}"]);
        // A cut never splits a character.
        let mut wide = b"a".to_vec();
        wide.extend("\u{e9}".repeat(300).as_bytes());
        let line = &slice(&split_lines(&wide), 1, 1).unwrap()[0];
        assert_eq!(line.len(), "L1: ".len() + 499);
    }

    const CODE: &str = "\
# module header
class A:
    # the method
    def f(self):
        x = 1

        return x

    def g(self):
        pass
";

    #[test]
    fn indentation_block_around_an_anchor() {
        let l = lines(CODE);
        // Anchor on `x = 1` (line 5): its block, the enclosing `def f` header
        // with its comment, and down through the first line back at that
        // level (meant for a closing brace; here the next method).
        let got = indentation_block(
            &l,
            5,
            100,
            &IndentationParams {
                max_levels: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                "L3:     # the method",
                "L4:     def f(self):",
                "L5:         x = 1",
                "L6: ",
                "L7:         return x",
                "L8: ",
                "L9:     def g(self):",
                "L10:         pass",
            ]
        );
    }

    #[test]
    fn indentation_block_with_siblings_and_limits() {
        let l = lines(CODE);
        // Anchored in `g`: going up stops at the second line at the minimum
        // indentation (`def f`) unless siblings are wanted.
        let levels = |include_siblings| IndentationParams {
            max_levels: 1,
            include_siblings,
            ..Default::default()
        };
        let got = indentation_block(&l, 10, 100, &levels(false)).unwrap();
        assert_eq!(got.first().map(String::as_str), Some("L5:         x = 1"));
        assert_eq!(got.last().map(String::as_str), Some("L10:         pass"));
        let got = indentation_block(&l, 10, 100, &levels(true)).unwrap();
        assert_eq!(
            got.first().map(String::as_str),
            Some("L3:     # the method")
        );
        let got = indentation_block(&l, 5, 1, &IndentationParams::default()).unwrap();
        assert_eq!(got, vec!["L5:         x = 1"]);
        // Three lines are taken (L4, L5, blank L6); the trailing blank goes.
        let got = indentation_block(
            &l,
            5,
            100,
            &IndentationParams {
                max_lines: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(got, vec!["L4:     def f(self):", "L5:         x = 1"]);
    }

    #[test]
    fn indentation_errors() {
        let l = lines(CODE);
        let err = |o: IndentationParams| indentation_block(&l, 1, 10, &o).unwrap_err();
        assert_eq!(
            err(IndentationParams {
                anchor_line: Some(0),
                ..Default::default()
            }),
            "anchor_line must be a 1-indexed line number"
        );
        assert_eq!(
            err(IndentationParams {
                max_lines: Some(0),
                ..Default::default()
            }),
            "max_lines must be greater than zero"
        );
        assert_eq!(
            err(IndentationParams {
                anchor_line: Some(99),
                ..Default::default()
            }),
            "anchor_line exceeds file length"
        );
    }
}
