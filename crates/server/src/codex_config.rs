//! Where Codex's `config.toml` is, for every Keel program that reads a part
//! of it (the model-proxy its providers, the mcp-broker its MCP servers,
//! `keel` a session's settings): a file named explicitly (`--config`,
//! `KEEL_CONFIG`), else `$CODEX_HOME/config.toml`, else
//! `~/.codex/config.toml` (Codex: `codex-rs/core/src/config/mod.rs`,
//! `find_codex_home`). Environment lookups go through a function so tests
//! never touch the real environment; blank values count as unset.

use std::path::{Path, PathBuf};

/// One environment lookup.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The config file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the config file {path}: {source}")]
pub struct ReadError {
    pub path: String,
    pub source: std::io::Error,
}

/// `$CODEX_HOME`, else `~/.codex`.
pub fn codex_home(env: Env<'_>) -> Option<PathBuf> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    match get("CODEX_HOME") {
        Some(home) => Some(PathBuf::from(home)),
        None => get("HOME").map(|h| PathBuf::from(h).join(".codex")),
    }
}

/// The path and text of the config file: `explicit` (which must exist),
/// else the default one; `None` when the default one does not exist (or no
/// home is known), which means defaults.
pub fn read(explicit: Option<&Path>, env: Env<'_>) -> Result<Option<(PathBuf, String)>, ReadError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match codex_home(env) {
            Some(home) => home.join("config.toml"),
            None => return Ok(None),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Ok(None),
        Err(source) => Err(ReadError {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_may_be_missing_but_a_named_one_may_not() {
        let dir = std::env::temp_dir().join(format!("keel-codex-config-{}", std::process::id()));
        let home = dir.display().to_string();
        let env = move |name: &str| (name == "CODEX_HOME").then(|| home.clone());
        assert!(read(None, &env).unwrap().is_none());
        let missing = dir.join("nope.toml");
        let err = read(Some(&missing), &env).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), "model = \"m\"\n").unwrap();
        let (path, text) = read(None, &env).unwrap().unwrap();
        assert_eq!(
            (path, text.as_str()),
            (dir.join("config.toml"), "model = \"m\"\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let blank = |name: &str| match name {
            "CODEX_HOME" => Some(" ".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(codex_home(&blank), Some(PathBuf::from("/home/u/.codex")));
    }
}
