//! The token file: opaque bearer tokens, stored as SHA-256 digests.
//!
//! ```toml
//! [[token]]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! principal = "alice@example.com"
//! tenant = "acme"
//! ```
//!
//! Tokens are 256 random bits ([`generate_token`]), so a plain SHA-256
//! digest is enough to keep the file useless to a reader (no password-style
//! stretching is needed for secrets that cannot be guessed). The server
//! re-reads the file when its contents change; a file that no longer parses
//! is reported and the previous tokens stay in force.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{Caller, validate_principal, validate_tenant};

/// One entry of the token file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    pub principal: String,
    pub tenant: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the token file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot draw random bytes for a token")]
    Random,
}

/// The token file's digest of `token`.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token: `keel_` and 256 random bits, base64url.
pub fn generate_token() -> Result<String, TokenFileError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenFileError::Random)?;
    Ok(format!(
        "keel_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

type Digest = [u8; 32];

fn parse(path: &Path, text: &str) -> Result<HashMap<Digest, Caller>, TokenFileError> {
    let invalid = |reason: String| TokenFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file: TokenFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut tokens = HashMap::with_capacity(file.tokens.len());
    for (n, entry) in file.tokens.into_iter().enumerate() {
        let at = |reason: String| invalid(format!("token {}: {reason}", n + 1));
        let digest: Digest = hex::decode(&entry.sha256)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| at("sha256 must be 64 hex digits".into()))?;
        validate_tenant(&entry.tenant).map_err(at)?;
        validate_principal(&entry.principal).map_err(at)?;
        let caller = Caller {
            tenant: entry.tenant,
            principal: entry.principal,
        };
        if tokens.insert(digest, caller).is_some() {
            return Err(at("the same token appears twice".into()));
        }
    }
    Ok(tokens)
}

/// Adds a new token for `principal` in `tenant` to the file at `path`
/// (created, readable by its owner only, if missing) and returns the token,
/// which is stored nowhere else: show it once.
pub fn append_token(path: &Path, principal: &str, tenant: &str) -> Result<String, TokenFileError> {
    let invalid = |reason: String| TokenFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    validate_tenant(tenant).map_err(invalid)?;
    validate_principal(principal).map_err(invalid)?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(TokenFileError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // Refuse to append to a file the server would not load.
    parse(path, &existing)?;
    let token = generate_token()?;
    // Validated values: no control characters, so escaping `\` and `"`
    // makes a TOML basic string.
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let block = format!(
        "[[token]]\nsha256 = {}\nprincipal = {}\ntenant = {}\n",
        quote(&hash_token(&token)),
        quote(principal),
        quote(tenant)
    );
    let write_err = |source| TokenFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(write_err)?;
    let separator = if existing.is_empty() || existing.ends_with("\n\n") {
        ""
    } else if existing.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    let text = format!("{separator}{block}");
    // What the server will read back must hold this very entry.
    let added = parse(path, &format!("{existing}{text}"))?;
    if !added.contains_key(&<Digest>::from(Sha256::digest(token.as_bytes()))) {
        return Err(invalid("the new entry did not read back".into()));
    }
    file.write_all(text.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(token)
}

struct Loaded {
    /// SHA-256 of the file's bytes, to notice changes.
    content: Digest,
    tokens: HashMap<Digest, Caller>,
}

/// The token file, loaded, and re-read when it changes.
pub struct TokenStore {
    path: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
}

impl TokenStore {
    /// Loads `path`; an unreadable or invalid file is an error.
    pub fn open(path: &Path) -> Result<Arc<Self>, TokenFileError> {
        let bytes = std::fs::read(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let loaded = Self::load(path, &bytes)?;
        tracing::info!(path = %path.display(), tokens = loaded.tokens.len(), "token file loaded");
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            loaded: RwLock::new(Arc::new(loaded)),
        }))
    }

    fn load(path: &Path, bytes: &[u8]) -> Result<Loaded, TokenFileError> {
        let text = std::str::from_utf8(bytes).map_err(|_| TokenFileError::Invalid {
            path: path.to_path_buf(),
            reason: "not UTF-8".into(),
        })?;
        Ok(Loaded {
            content: Sha256::digest(bytes).into(),
            tokens: parse(path, text)?,
        })
    }

    fn current(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The caller `token` belongs to.
    pub fn lookup(&self, token: &str) -> Option<Caller> {
        let digest: Digest = Sha256::digest(token.as_bytes()).into();
        self.current().tokens.get(&digest).cloned()
    }

    /// Re-reads the file if its contents changed; returns whether the
    /// tokens in force changed. A file that cannot be read or parsed is
    /// logged, and the previous tokens stay.
    pub fn reload(&self) -> bool {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot re-read the token file; keeping the tokens loaded before");
                return false;
            }
        };
        let content: Digest = Sha256::digest(&bytes).into();
        if content == self.current().content {
            return false;
        }
        let loaded = match Self::load(&self.path, &bytes) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "keeping the tokens loaded before");
                // Remember the bad contents so the error is logged once.
                Loaded {
                    content,
                    tokens: self.current().tokens.clone(),
                }
            }
        };
        let count = loaded.tokens.len();
        match self.loaded.write() {
            Ok(mut guard) => *guard = Arc::new(loaded),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(loaded),
        }
        tracing::info!(path = %self.path.display(), tokens = count, "token file reloaded");
        true
    }

    /// Re-reads the file every `every` while the runtime lives.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                // Reading a small file; off the async threads all the same.
                let _ = tokio::task::spawn_blocking(move || store.reload()).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_tokens_are_found_and_stored_only_as_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let alice = append_token(&path, "alice", "acme").unwrap();
        let bob = append_token(&path, "bob@example.com", "globex").unwrap();
        assert!(alice.starts_with("keel_") && alice.len() > 40, "{alice}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&alice) && text.contains(&hash_token(&alice)),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let store = TokenStore::open(&path).unwrap();
        assert_eq!(
            store.lookup(&alice),
            Some(Caller {
                tenant: "acme".into(),
                principal: "alice".into()
            })
        );
        assert_eq!(store.lookup(&bob).unwrap().tenant, "globex");
        assert_eq!(store.lookup("keel_guess"), None);
        assert_eq!(store.lookup(""), None);
    }

    #[test]
    fn the_file_is_reloaded_when_it_changes_and_a_broken_file_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let first = append_token(&path, "alice", "acme").unwrap();
        let store = TokenStore::open(&path).unwrap();
        assert!(!store.reload(), "nothing changed");
        let second = append_token(&path, "bob", "acme").unwrap();
        assert_eq!(store.lookup(&second), None, "not reloaded yet");
        assert!(store.reload());
        assert_eq!(store.lookup(&second).unwrap().principal, "bob");
        // Revoking: the entry is removed from the file.
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .split("\n\n")
            .filter(|b| !b.contains(&hash_token(&first)))
            .collect();
        std::fs::write(&path, kept.join("\n\n")).unwrap();
        assert!(store.reload());
        assert_eq!(store.lookup(&first), None);
        assert!(store.lookup(&second).is_some());
        // A broken edit keeps what was in force.
        std::fs::write(&path, "[[token]]\nsha256 = 'nothex'\n").unwrap();
        assert!(store.reload());
        assert!(store.lookup(&second).is_some());
    }

    #[test]
    fn invalid_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let digest = hash_token("x");
        for (text, reason) in [
            (
                "[[token]]\nsha256 = 'abc'\nprincipal = 'a'\ntenant = 't'\n",
                "64 hex digits",
            ),
            (
                &format!("[[token]]\nsha256 = '{digest}'\nprincipal = 'a'\ntenant = 'T'\n"),
                "tenant",
            ),
            (
                &format!("[[token]]\nsha256 = '{digest}'\nprincipal = ''\ntenant = 't'\n"),
                "principal",
            ),
            (
                &format!(
                    "[[token]]\nsha256 = '{digest}'\nprincipal = 'a'\ntenant = 't'\ntoken = 'plain'\n"
                ),
                "unknown field",
            ),
            (
                &format!(
                    "[[token]]\nsha256 = '{digest}'\nprincipal = 'a'\ntenant = 't'\n[[token]]\nsha256 = '{digest}'\nprincipal = 'b'\ntenant = 't'\n"
                ),
                "twice",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = TokenStore::open(&path).err().unwrap().to_string();
            assert!(err.contains(reason), "{err}");
        }
        assert!(
            append_token(&path, "a", "t").is_err(),
            "appending to a broken file"
        );
        assert!(append_token(&dir.path().join("new"), "a", "Bad Tenant").is_err());
    }
}
