//! The proxy's settings, and the API key that must never be shown.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Where and how the proxy calls the model vendor.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Responses API base, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// `None`: every call fails UNAUTHENTICATED with a hint to configure one.
    pub api_key: Option<ApiKey>,
    /// Used when a request names no model.
    pub default_model: String,
    /// The longest wait for the response headers or for the next SSE bytes.
    pub stream_idle_timeout: Duration,
}

/// A vendor API key. Its `Debug` and `Display` are redacted, so the key stays
/// out of logs, errors and responses even when the struct holding it is printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// `None` for an empty or blank key (an unset-but-exported variable).
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into().trim().to_string();
        (!key.is_empty()).then_some(Self(key))
    }

    /// `None` when the key is blank.
    pub fn non_empty(self) -> Option<Self> {
        (!self.0.is_empty()).then_some(self)
    }

    /// The secret itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced, for vendor messages
    /// that might echo it.
    pub(crate) fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "<redacted>")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// For clap. Parsing never fails, so no parse error can echo the value; a
/// blank key is dropped with [`ApiKey::non_empty`].
impl FromStr for ApiKey {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn key_is_redacted_everywhere() {
        let Some(key) = ApiKey::new("sk-secret-123") else {
            panic!("a non-empty key")
        };
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(format!("{key}"), "<redacted>");
        let config = Config {
            base_url: "http://x".into(),
            api_key: Some(key.clone()),
            default_model: "m".into(),
            stream_idle_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{config:?}").contains("sk-secret"));
        assert_eq!(key.redact("bad key sk-secret-123!"), "bad key <redacted>!");
        assert!(ApiKey::new("  ").is_none());
        assert!("".parse::<ApiKey>().is_ok_and(|k| k.non_empty().is_none()));
    }
}
