//! Codex's config.toml, as far as model access goes (Codex: `codex-rs/core/src/config/`): the model, the
//! provider, profiles, `[model_providers.<id>]` and the context window
//! overrides. Every other key is
//! ignored, because Codex has many the proxy has no use for. Environment
//! lookups go through a function so tests never touch the real environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::{
    ApiKey, Config, DEFAULT_MODEL, DEFAULT_PROVIDER, Limits, MAX_RETRIES_CAP, Provider,
    RetryTiming, WireApi,
};
use crate::catalog::CatalogOverrides;
use crate::controls::{
    CallDefaults, Personality, ReasoningEffort, ReasoningSummary, ServiceTier, Verbosity,
};

/// A lookup of one environment variable; blank values count as unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What the command line says, which wins over the environment and the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`: read this file; it must exist.
    pub config_file: Option<PathBuf>,
    pub profile: Option<String>,
    pub model: Option<String>,
    pub model_provider: Option<String>,
    /// The built-in `openai` provider's base URL.
    pub openai_base_url: Option<String>,
    /// The built-in `openai` provider's key.
    pub openai_api_key: Option<ApiKey>,
    /// Replaces every provider's `stream_idle_timeout_ms`.
    pub stream_idle_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `path:line:column: message`, as compilers print it.
    #[error("invalid config file {location}: {message}")]
    Parse { location: String, message: String },
    #[error("invalid configuration in {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfigToml {
    model: Option<String>,
    model_provider: Option<String>,
    model_reasoning_effort: Option<ReasoningEffort>,
    model_reasoning_summary: Option<ReasoningSummary>,
    model_verbosity: Option<Verbosity>,
    service_tier: Option<ServiceTier>,
    personality: Option<Personality>,
    model_context_window: Option<u64>,
    model_auto_compact_token_limit: Option<u64>,
    openai_base_url: Option<String>,
    profile: Option<String>,
    profiles: BTreeMap<String, ProfileToml>,
    model_providers: BTreeMap<String, ProviderToml>,
    model_prices: BTreeMap<String, super::Price>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProfileToml {
    model: Option<String>,
    model_provider: Option<String>,
    model_reasoning_effort: Option<ReasoningEffort>,
    model_reasoning_summary: Option<ReasoningSummary>,
    model_verbosity: Option<Verbosity>,
    service_tier: Option<ServiceTier>,
    personality: Option<Personality>,
    model_context_window: Option<u64>,
    model_auto_compact_token_limit: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProviderToml {
    name: Option<String>,
    base_url: Option<String>,
    env_key: Option<String>,
    env_key_instructions: Option<String>,
    experimental_bearer_token: Option<String>,
    wire_api: Option<WireApi>,
    query_params: BTreeMap<String, String>,
    http_headers: BTreeMap<String, String>,
    env_http_headers: BTreeMap<String, String>,
    request_max_retries: Option<u64>,
    stream_max_retries: Option<u64>,
    stream_idle_timeout_ms: Option<u64>,
}

/// Reads the configuration: `overrides.config_file`, else `$KEEL_CONFIG`,
/// else `$CODEX_HOME/config.toml`, else `~/.codex/config.toml`. A missing
/// default file means defaults; a file named explicitly must exist.
pub fn load(overrides: &Overrides, env: Env<'_>) -> Result<Config, ConfigError> {
    let explicit = overrides
        .config_file
        .clone()
        .or_else(|| get(env, "KEEL_CONFIG").map(PathBuf::from));
    let file = keel_server::codex_config::read(explicit.as_deref(), env).map_err(|e| {
        ConfigError::Read {
            path: e.path,
            source: e.source,
        }
    })?;
    match file {
        Some((path, text)) => resolve(
            parse(&path, &text)?,
            &path.display().to_string(),
            overrides,
            env,
        ),
        None => resolve(
            ConfigToml::default(),
            "the built-in defaults",
            overrides,
            env,
        ),
    }
}

/// Parses config.toml text; errors name the file, line and column.
pub fn parse_str(
    path: &Path,
    text: &str,
    overrides: &Overrides,
    env: Env<'_>,
) -> Result<Config, ConfigError> {
    resolve(
        parse(path, text)?,
        &path.display().to_string(),
        overrides,
        env,
    )
}

fn parse(path: &Path, text: &str) -> Result<ConfigToml, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let location = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("{}:{line}:{column}", path.display())
            }
            None => path.display().to_string(),
        };
        // Only the message: toml's own rendering quotes the offending line,
        // which could hold a token.
        ConfigError::Parse {
            location,
            message: e.message().trim().to_string(),
        }
    })
}

fn get(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

fn resolve(
    file: ConfigToml,
    label: &str,
    overrides: &Overrides,
    env: Env<'_>,
) -> Result<Config, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: label.to_string(),
        message,
    };
    for (model, price) in &file.model_prices {
        let prices = [
            price.input_per_million,
            price.cached_input_per_million.unwrap_or(0.0),
            price.output_per_million,
        ];
        if prices.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(invalid(format!(
                "[model_prices.{model}]: prices are US dollars per million tokens, zero or more"
            )));
        }
    }
    let profile_name = overrides.profile.clone().or(file.profile.clone());
    let empty = ProfileToml::default();
    let profile = match &profile_name {
        None => &empty,
        Some(name) => file.profiles.get(name).ok_or_else(|| {
            invalid(format!(
                "profile {name:?} is not defined (no [profiles.{name}])"
            ))
        })?,
    };

    let mut providers = built_in_providers(&file, overrides, env);
    for (id, p) in &file.model_providers {
        if providers.contains_key(id) {
            tracing::warn!(provider = %id, "config.toml cannot redefine a built-in provider; ignored");
            continue;
        }
        let provider = user_provider(id, p, env).map_err(&invalid)?;
        providers.insert(id.clone(), provider);
    }
    for p in providers.values_mut() {
        if let Some(timeout) = overrides.stream_idle_timeout {
            p.stream_idle_timeout = timeout;
        }
        check_url(p).map_err(&invalid)?;
    }

    let default_provider = overrides
        .model_provider
        .clone()
        .or(profile.model_provider.clone())
        .or(file.model_provider.clone())
        .unwrap_or_else(|| DEFAULT_PROVIDER.to_string());
    if !providers.contains_key(&default_provider) {
        return Err(invalid(format!(
            "model_provider {default_provider:?} is not defined (no [model_providers.{default_provider}]); known: {}",
            providers.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let default_model = overrides
        .model
        .clone()
        .or_else(|| get(env, "KEEL_MODEL"))
        .or(profile.model.clone())
        .or(file.model.clone())
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    Ok(Config {
        providers,
        default_provider,
        default_model,
        defaults: CallDefaults {
            reasoning_effort: profile
                .model_reasoning_effort
                .or(file.model_reasoning_effort),
            reasoning_summary: profile
                .model_reasoning_summary
                .or(file.model_reasoning_summary),
            verbosity: profile.model_verbosity.or(file.model_verbosity),
            service_tier: profile.service_tier.or(file.service_tier),
            personality: profile.personality.or(file.personality),
        },
        catalog: CatalogOverrides {
            context_window: profile.model_context_window.or(file.model_context_window),
            auto_compact_token_limit: profile
                .model_auto_compact_token_limit
                .or(file.model_auto_compact_token_limit),
        },
        limits: Limits::default(),
        retry: RetryTiming::default(),
        prices: file.model_prices.clone(),
    })
}

/// `openai`, `ollama` and `lmstudio`, as Codex defines them.
fn built_in_providers(
    file: &ConfigToml,
    overrides: &Overrides,
    env: Env<'_>,
) -> BTreeMap<String, Provider> {
    let openai_url = overrides
        .openai_base_url
        .clone()
        .or_else(|| get(env, "OPENAI_BASE_URL"))
        .or(file.openai_base_url.clone())
        .unwrap_or_else(|| "https://api.openai.com/v1".to_string());
    let mut openai = Provider::new(DEFAULT_PROVIDER, "OpenAI", &openai_url, WireApi::Responses);
    openai.env_key = Some("OPENAI_API_KEY".into());
    openai.api_key = overrides
        .openai_api_key
        .clone()
        .and_then(ApiKey::non_empty)
        .or_else(|| get(env, "OPENAI_API_KEY").and_then(ApiKey::new));
    for (header, var) in [
        ("OpenAI-Organization", "OPENAI_ORGANIZATION"),
        ("OpenAI-Project", "OPENAI_PROJECT"),
    ] {
        if let Some(value) = get(env, var) {
            // A value that is not a valid header is left out, as Codex does.
            let _ = add_header(&mut openai, header, &value, true);
        }
    }

    let oss_url = |port: u16| {
        get(env, "CODEX_OSS_BASE_URL").unwrap_or_else(|| {
            let port = get(env, "CODEX_OSS_PORT")
                .and_then(|p| p.trim().parse::<u16>().ok())
                .unwrap_or(port);
            format!("http://localhost:{port}/v1")
        })
    };
    let ollama = Provider::new("ollama", "Ollama", &oss_url(11434), WireApi::Chat);
    let lmstudio = Provider::new("lmstudio", "LM Studio", &oss_url(1234), WireApi::Responses);
    [openai, ollama, lmstudio]
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect()
}

fn user_provider(id: &str, p: &ProviderToml, env: Env<'_>) -> Result<Provider, String> {
    let base_url = p.base_url.as_deref().unwrap_or("https://api.openai.com/v1");
    let name = p.name.as_deref().unwrap_or(id);
    let mut provider = Provider::new(id, name, base_url, p.wire_api.unwrap_or(WireApi::Responses));
    provider.env_key = p.env_key.clone().filter(|k| !k.trim().is_empty());
    provider.env_key_instructions = p.env_key_instructions.clone();
    provider.api_key = provider
        .env_key
        .as_deref()
        .and_then(|var| get(env, var))
        .and_then(ApiKey::new)
        .or_else(|| p.experimental_bearer_token.clone().and_then(ApiKey::new));
    provider.query_params = p
        .query_params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let section = format!("[model_providers.{id}]");
    for (header, value) in &p.http_headers {
        add_header(&mut provider, header, value, false)
            .map_err(|e| format!("{section} http_headers: {e}"))?;
    }
    for (header, var) in &p.env_http_headers {
        if let Some(value) = get(env, var) {
            add_header(&mut provider, header, &value, true)
                .map_err(|e| format!("{section} env_http_headers: {e} (from ${var})"))?;
        }
    }
    let cap = |n: Option<u64>, default: u32| {
        n.map_or(default, |n| {
            u32::try_from(n.min(u64::from(MAX_RETRIES_CAP))).unwrap_or(MAX_RETRIES_CAP)
        })
    };
    provider.request_max_retries = cap(p.request_max_retries, provider.request_max_retries);
    provider.stream_max_retries = cap(p.stream_max_retries, provider.stream_max_retries);
    if let Some(ms) = p.stream_idle_timeout_ms {
        provider.stream_idle_timeout = Duration::from_millis(ms);
    }
    Ok(provider)
}

/// Adds a header; one that came from the environment is kept out of logs
/// and scrubbed from messages. The error never includes the value.
fn add_header(p: &mut Provider, name: &str, value: &str, secret: bool) -> Result<(), String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid HTTP header name"))?;
    let mut v = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name:?} is not a valid HTTP header value"))?;
    v.set_sensitive(true);
    p.headers.insert(header, v);
    if secret && value.trim().len() >= 8 {
        p.secret_header_values.push(value.trim().to_string());
    }
    Ok(())
}

fn check_url(p: &Provider) -> Result<(), String> {
    match reqwest::Url::parse(&p.base_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        _ => Err(format!(
            "provider {:?}: base_url {:?} is not an http(s) URL",
            p.id, p.base_url
        )),
    }
}

/// For tests of the header map.
#[cfg(test)]
pub(crate) fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
