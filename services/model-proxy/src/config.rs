//! The proxy's settings: model providers (as Codex configures them), defaults
//! for calls, capacity and retry timing; and the API key that must never be
//! shown. [`file`] reads them from Codex's config.toml.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::catalog::CatalogOverrides;
use crate::controls::CallDefaults;

pub mod file;

pub use file::{ConfigError, Overrides, load};

/// The model used when neither the request nor the configuration names one.
pub const DEFAULT_MODEL: &str = "gpt-5-codex";
/// The provider used when the configuration names none.
pub const DEFAULT_PROVIDER: &str = "openai";

/// Everything the proxy needs to call model vendors.
#[derive(Debug, Clone)]
pub struct Config {
    /// By id: the built-in ones and those of config.toml.
    pub providers: BTreeMap<String, Provider>,
    /// Used when a request names no provider.
    pub default_provider: String,
    /// Used when a request names no model.
    pub default_model: String,
    /// Used for the controls a request leaves empty.
    pub defaults: CallDefaults,
    /// Replacements for the catalog's context windows.
    pub catalog: CatalogOverrides,
    pub limits: Limits,
    pub retry: RetryTiming,
    /// `[model_prices.<model>]`: what a model's tokens cost, for the
    /// `keel_model_cost_usd_total` metric.
    pub prices: BTreeMap<String, Price>,
}

/// A model's prices in US dollars per million tokens (a Keel key of
/// config.toml; Codex ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    /// Cached input tokens; the input price when not set.
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
    /// Output tokens, reasoning included.
    pub output_per_million: f64,
}

impl Price {
    /// What `usage` costs.
    pub fn cost_usd(&self, usage: &keel_proto::v1::TokenUsage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let uncached = usage.input_tokens - cached;
        let cached_price = self
            .cached_input_per_million
            .unwrap_or(self.input_per_million);
        (uncached as f64 * self.input_per_million
            + cached as f64 * cached_price
            + usage.output_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

impl Config {
    /// The price of `model`: its own, else that of the longest configured
    /// name it starts with (`gpt-5` prices `gpt-5-codex` unless that has
    /// its own).
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.prices
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| price)
    }
}

impl Config {
    /// One `openai` provider at `base_url` with `api_key`: the whole
    /// configuration of a proxy in front of a single Responses API.
    pub fn single(base_url: &str, api_key: Option<ApiKey>, default_model: &str) -> Self {
        let mut openai = Provider::new(DEFAULT_PROVIDER, "OpenAI", base_url, WireApi::Responses);
        openai.env_key = Some("OPENAI_API_KEY".into());
        openai.api_key = api_key;
        Self {
            providers: BTreeMap::from([(DEFAULT_PROVIDER.to_string(), openai)]),
            default_provider: DEFAULT_PROVIDER.into(),
            default_model: default_model.into(),
            defaults: CallDefaults::default(),
            catalog: CatalogOverrides::default(),
            limits: Limits::default(),
            retry: RetryTiming::default(),
            prices: BTreeMap::new(),
        }
    }

    /// Adds or replaces a provider.
    pub fn with_provider(mut self, provider: Provider) -> Self {
        self.providers.insert(provider.id.clone(), provider);
        self
    }

    /// The default provider, for settings that apply to it alone.
    pub fn default_provider_mut(&mut self) -> Option<&mut Provider> {
        self.providers.get_mut(&self.default_provider)
    }

    /// `text` with every secret the configuration holds (API keys, header
    /// values taken from the environment) replaced: for vendor messages that
    /// might echo one.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for p in self.providers.values() {
            if let Some(key) = &p.api_key {
                text = key.redact(&text);
            }
            for secret in &p.secret_header_values {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// How the proxy talks to a provider's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireApi {
    /// `POST {base_url}/responses`.
    Responses,
    /// `POST {base_url}/chat/completions`.
    Chat,
}

impl WireApi {
    pub fn path(self) -> &'static str {
        match self {
            Self::Responses => "responses",
            Self::Chat => "chat/completions",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Responses => "responses",
            Self::Chat => "chat",
        }
    }
}

/// One model provider, resolved: its key read, its headers built.
#[derive(Clone)]
pub struct Provider {
    pub id: String,
    /// For people: log lines and errors.
    pub name: String,
    /// E.g. `https://api.openai.com/v1`; the wire API's path is appended.
    pub base_url: String,
    pub wire_api: WireApi,
    /// The variable the key is read from. `None`: the provider needs no key.
    pub env_key: Option<String>,
    /// Shown when the key is missing.
    pub env_key_instructions: Option<String>,
    pub api_key: Option<ApiKey>,
    /// Appended to every request URL (e.g. Azure's `api-version`).
    pub query_params: Vec<(String, String)>,
    /// Sent with every request: `http_headers` and the set `env_http_headers`.
    pub headers: HeaderMap,
    /// Header values that came from the environment: redacted from messages.
    pub secret_header_values: Vec<String>,
    /// Silent retries of one request on HTTP 5xx and connection errors.
    pub request_max_retries: u32,
    /// Whole-request retries after a retryable failure (with `stream_error`).
    pub stream_max_retries: u32,
    /// The longest wait for response headers or the next streamed bytes.
    pub stream_idle_timeout: Duration,
}

/// Codex's limits on the retry settings.
pub const MAX_RETRIES_CAP: u32 = 100;
pub const DEFAULT_REQUEST_MAX_RETRIES: u32 = 4;
pub const DEFAULT_STREAM_MAX_RETRIES: u32 = 5;
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_millis(300_000);

impl Provider {
    /// A provider with Codex's defaults: no key, no extra headers.
    pub fn new(id: &str, name: &str, base_url: &str, wire_api: WireApi) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            base_url: base_url.into(),
            wire_api,
            env_key: None,
            env_key_instructions: None,
            api_key: None,
            query_params: Vec::new(),
            headers: HeaderMap::new(),
            secret_header_values: Vec::new(),
            request_max_retries: DEFAULT_REQUEST_MAX_RETRIES,
            stream_max_retries: DEFAULT_STREAM_MAX_RETRIES,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
        }
    }

    /// Whether calls must fail for want of a key.
    pub fn missing_key(&self) -> bool {
        self.env_key.is_some() && self.api_key.is_none()
    }
}

/// Never prints the key or header values.
impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("wire_api", &self.wire_api)
            .field("env_key", &self.env_key)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("query_params", &self.query_params)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("request_max_retries", &self.request_max_retries)
            .field("stream_max_retries", &self.stream_max_retries)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .finish()
    }
}

/// Per-provider capacity: calls in flight, and calls waiting for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrent_per_provider: usize,
    pub max_queued_per_provider: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_per_provider: 64,
            max_queued_per_provider: 256,
        }
    }
}

/// Backoff timing (Codex's: 200 ms doubling); tests shorten it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryTiming {
    /// The first retry's delay before jitter.
    pub base_delay: Duration,
    /// The longest delay the proxy waits: a computed backoff is capped to it,
    /// and a server asking for a longer wait fails the call instead.
    pub max_delay: Duration,
}

impl Default for RetryTiming {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
        }
    }
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
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn key_is_redacted_everywhere() {
        let Some(key) = ApiKey::new("sk-secret-123") else {
            panic!("a non-empty key")
        };
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(format!("{key}"), "<redacted>");
        let mut config = Config::single("http://x", Some(key.clone()), "m");
        let p = config.default_provider_mut().unwrap();
        p.headers
            .insert("x-secret", HeaderValue::from_static("hdr-secret-456"));
        p.secret_header_values.push("hdr-secret-456".into());
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-secret"), "{printed}");
        assert!(!printed.contains("hdr-secret"), "{printed}");
        assert_eq!(key.redact("bad key sk-secret-123!"), "bad key <redacted>!");
        assert_eq!(
            config.redact("sk-secret-123 and hdr-secret-456"),
            "<redacted> and <redacted>"
        );
        assert!(ApiKey::new("  ").is_none());
        assert!("".parse::<ApiKey>().is_ok_and(|k| k.non_empty().is_none()));
    }
}
