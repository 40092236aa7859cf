//! `apply-patch`: applies an apply_patch patch in the current directory, as
//! Codex's standalone `apply_patch` executable does
//! (`codex-rs/apply-patch/src/standalone_executable.rs`): the patch is the
//! one argument, or stdin when there is none; on success the summary goes to
//! stdout and the exit code is 0; a patch that cannot be applied is
//! reported on stderr with exit code 1 (nothing written, unless writing
//! itself failed midway); a usage error exits with 2.
//!
//! Unlike Codex's, it writes only inside the current directory's subtree
//! unless told otherwise, before the patch: `--workspace-root DIR`
//! (repeatable) allows those subtrees instead, `--allow-any-workspace`
//! anything its user may write. Paths are resolved as the kernel would
//! (symlinks and `..` followed) before they are checked.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use keel_apply_patch::{PatchResult, apply_patch};
use keel_paths::Workspace;

const USAGE: &str = "Usage: apply-patch [--workspace-root DIR]... [--allow-any-workspace] 'PATCH'\n       echo 'PATCH' | apply-patch [--workspace-root DIR]... [--allow-any-workspace]";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    let mut roots: Vec<std::path::PathBuf> = Vec::new();
    let mut allow_any = false;
    while let Some(flag) = args.peek().and_then(|a| a.to_str()) {
        match flag {
            "--allow-any-workspace" => allow_any = true,
            "--workspace-root" => {
                args.next();
                let Some(root) = args.peek() else {
                    eprintln!("Error: --workspace-root needs a directory.\n{USAGE}");
                    return ExitCode::from(2);
                };
                roots.push(root.into());
            }
            _ => break,
        }
        args.next();
    }
    let patch = match args.next() {
        Some(arg) => match arg.into_string() {
            Ok(patch) => patch,
            Err(_) => {
                eprintln!("Error: apply-patch requires a UTF-8 PATCH argument.");
                return ExitCode::from(1);
            }
        },
        None => {
            let mut patch = String::new();
            if let Err(err) = std::io::stdin().read_to_string(&mut patch) {
                eprintln!("Error: cannot read the patch from stdin: {err}");
                return ExitCode::from(1);
            }
            if patch.is_empty() {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            patch
        }
    };
    if args.next().is_some() {
        eprintln!("Error: apply-patch accepts exactly one argument.\n{USAGE}");
        return ExitCode::from(2);
    }
    let cwd = match std::env::current_dir().and_then(std::fs::canonicalize) {
        Ok(cwd) => cwd,
        Err(err) => {
            eprintln!("Error: cannot resolve the current directory: {err}");
            return ExitCode::from(1);
        }
    };
    let workspace = if allow_any {
        Workspace::any()
    } else {
        if roots.is_empty() {
            roots.push(cwd.clone());
        }
        match Workspace::restricted(&roots) {
            Ok(workspace) => workspace,
            Err(err) => {
                eprintln!("Error: {err}");
                return ExitCode::from(2);
            }
        }
    };
    match apply_patch(&patch, &cwd, &workspace) {
        PatchResult::Applied { summary } => {
            let mut stdout = std::io::stdout().lock();
            let written = writeln!(stdout, "{}", summary.trim_end()).and_then(|()| stdout.flush());
            if written.is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("{}", other.text().trim_end());
            ExitCode::from(1)
        }
    }
}
