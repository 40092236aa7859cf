#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;

use super::*;

/// A fake environment: only these variables exist.
fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const FULL: &str = r#"
model = "gpt-top"
model_provider = "azure"
model_reasoning_effort = "low"
profile = "deep"
approval_policy = "never"          # a Codex key the proxy ignores
[features]
unified_exec = true

[profiles.deep]
model = "o-deep"
model_reasoning_effort = "high"
model_reasoning_summary = "detailed"
service_tier = "fast"

[profiles.local]
model_provider = "ollama"
model = "qwen3"

[model_providers.azure]
name = "Azure"
base_url = "https://example.openai.azure.com/openai"
env_key = "AZURE_OPENAI_API_KEY"
wire_api = "responses"
query_params = { api-version = "2025-04-01-preview" }
http_headers = { "X-Static" = "static-value" }
env_http_headers = { "X-Tenant" = "AZURE_TENANT" }
request_max_retries = 7
stream_max_retries = 1000
stream_idle_timeout_ms = 1500
something_new = "ignored"

[model_providers.mistral]
name = "Mistral"
base_url = "https://api.mistral.ai/v1"
env_key = "MISTRAL_API_KEY"
env_key_instructions = "Create a key at console.mistral.ai"
wire_api = "chat"
"#;

#[test]
fn profiles_providers_headers_and_keys_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "config.toml", FULL);
    let env = env_of(&[
        ("KEEL_CONFIG", path.to_str().unwrap()),
        ("AZURE_OPENAI_API_KEY", "az-key-123"),
        ("AZURE_TENANT", "tenant-secret-789"),
        ("OPENAI_API_KEY", "sk-openai"),
    ]);
    let config = load(&Overrides::default(), &env).unwrap();
    assert_eq!(config.default_provider, "azure", "top-level model_provider");
    assert_eq!(config.default_model, "o-deep", "the profile's model wins");
    assert_eq!(
        config.defaults.reasoning_effort,
        Some(ReasoningEffort::High)
    );
    assert_eq!(
        config.defaults.reasoning_summary,
        Some(ReasoningSummary::Detailed)
    );
    assert_eq!(config.defaults.service_tier, Some(ServiceTier::Fast));

    let azure = &config.providers["azure"];
    assert_eq!(azure.name, "Azure");
    assert_eq!(azure.wire_api, WireApi::Responses);
    assert_eq!(azure.api_key.as_ref().unwrap().expose(), "az-key-123");
    assert_eq!(
        azure.query_params,
        [("api-version".to_string(), "2025-04-01-preview".to_string())]
    );
    assert_eq!(
        super::header(&azure.headers, "x-static"),
        Some("static-value")
    );
    assert_eq!(
        super::header(&azure.headers, "x-tenant"),
        Some("tenant-secret-789")
    );
    assert_eq!(azure.request_max_retries, 7);
    assert_eq!(azure.stream_max_retries, MAX_RETRIES_CAP, "capped at 100");
    assert_eq!(azure.stream_idle_timeout, Duration::from_millis(1500));
    assert!(!format!("{azure:?}").contains("tenant-secret"));
    assert_eq!(
        config.redact("echo tenant-secret-789 az-key-123"),
        "echo <redacted> <redacted>"
    );

    let mistral = &config.providers["mistral"];
    assert_eq!(mistral.wire_api, WireApi::Chat);
    assert!(mistral.missing_key(), "MISTRAL_API_KEY is unset");
    assert_eq!(
        mistral.env_key_instructions.as_deref(),
        Some("Create a key at console.mistral.ai")
    );
    assert_eq!(mistral.request_max_retries, 4);
    assert_eq!(mistral.stream_max_retries, 5);
    assert_eq!(mistral.stream_idle_timeout, Duration::from_millis(300_000));

    // The built-ins are there too, and openai takes OPENAI_API_KEY.
    assert_eq!(
        config.providers["openai"]
            .api_key
            .as_ref()
            .unwrap()
            .expose(),
        "sk-openai"
    );
    assert_eq!(config.providers["ollama"].wire_api, WireApi::Chat);
    assert_eq!(
        config.providers["ollama"].base_url,
        "http://localhost:11434/v1"
    );
    assert!(!config.providers["ollama"].missing_key());
    assert_eq!(
        config.providers["lmstudio"].base_url,
        "http://localhost:1234/v1"
    );
}

#[test]
fn a_profile_can_switch_provider_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.toml", FULL);
    let env = env_of(&[("CODEX_OSS_PORT", "9999")]);
    let overrides = Overrides {
        config_file: Some(path.clone()),
        profile: Some("local".into()),
        ..Overrides::default()
    };
    let config = load(&overrides, &env).unwrap();
    assert_eq!(config.default_provider, "ollama");
    assert_eq!(config.default_model, "qwen3");
    assert_eq!(
        config.defaults.reasoning_effort,
        Some(ReasoningEffort::Low),
        "the top level's, as the profile sets none"
    );
    assert_eq!(
        config.providers["ollama"].base_url,
        "http://localhost:9999/v1"
    );

    let overrides = Overrides {
        config_file: Some(path),
        model: Some("flag-model".into()),
        model_provider: Some("mistral".into()),
        stream_idle_timeout: Some(Duration::from_millis(42)),
        ..Overrides::default()
    };
    let config = load(&overrides, &env_of(&[("KEEL_MODEL", "env-model")])).unwrap();
    assert_eq!(config.default_model, "flag-model");
    assert_eq!(config.default_provider, "mistral");
    assert!(
        config
            .providers
            .values()
            .all(|p| p.stream_idle_timeout == Duration::from_millis(42))
    );
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir,
        "config.toml",
        "model = \"from-file\"\nopenai_base_url = \"http://file.example/v1\"\n",
    );
    let home = dir.path().to_str().unwrap();
    let config = load(&Overrides::default(), &env_of(&[("CODEX_HOME", home)])).unwrap();
    assert_eq!(config.default_model, "from-file");
    assert_eq!(
        config.providers["openai"].base_url,
        "http://file.example/v1"
    );
    assert!(config.providers["openai"].missing_key());

    let env = env_of(&[
        ("CODEX_HOME", home),
        ("KEEL_MODEL", "from-env"),
        ("OPENAI_BASE_URL", "http://env.example/v1"),
        ("OPENAI_API_KEY", "  "),
    ]);
    let config = load(&Overrides::default(), &env).unwrap();
    assert_eq!(config.default_model, "from-env");
    assert_eq!(config.providers["openai"].base_url, "http://env.example/v1");
    assert!(
        config.providers["openai"].missing_key(),
        "a blank key is no key"
    );

    let overrides = Overrides {
        openai_base_url: Some("http://flag.example/v1".into()),
        openai_api_key: ApiKey::new("sk-flag"),
        ..Overrides::default()
    };
    let config = load(&overrides, &env).unwrap();
    assert_eq!(
        config.providers["openai"].base_url,
        "http://flag.example/v1"
    );
    assert!(!config.providers["openai"].missing_key());
}

#[test]
fn missing_default_file_means_defaults_but_a_named_one_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let config = load(&Overrides::default(), &env_of(&[("HOME", home)])).unwrap();
    assert_eq!(config.default_provider, "openai");
    assert_eq!(config.default_model, DEFAULT_MODEL);
    assert_eq!(
        config.providers["openai"].base_url,
        "https://api.openai.com/v1"
    );
    assert_eq!(config.providers.len(), 3);
    assert_eq!(config.defaults, CallDefaults::default());

    let config = load(&Overrides::default(), &env_of(&[])).unwrap();
    assert_eq!(config.default_provider, "openai");

    let missing = dir.path().join("nope.toml");
    let err = load(
        &Overrides::default(),
        &env_of(&[("KEEL_CONFIG", missing.to_str().unwrap())]),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nope.toml"), "{err}");
}

#[test]
fn malformed_files_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "model = \"ok\"\n\n[model_providers.x]\nbase_url = = \"secret-token-here\"\n",
            ":4:",
        ),
        (
            "model = \"ok\"\n[model_providers.x]\nwire_api = \"grpc\"\n",
            ":3:",
        ),
        ("model_reasoning_effort = \"ultra\"\n", ":1:"),
        (
            "[model_providers.x]\nrequest_max_retries = \"four\"\n",
            ":2:",
        ),
    ];
    for (text, line) in cases {
        let path = write(&dir, "bad.toml", text);
        let err = load(
            &Overrides {
                config_file: Some(path.clone()),
                ..Overrides::default()
            },
            &env_of(&[]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
        assert!(msg.contains(&format!("{}{line}", path.display())), "{msg}");
        assert!(
            !msg.contains("secret-token-here"),
            "the line is not quoted: {msg}"
        );
    }
}

#[test]
fn semantic_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "model_provider = \"nope\"\n",
            "model_provider \"nope\" is not defined",
        ),
        ("profile = \"gone\"\n", "profile \"gone\" is not defined"),
        (
            "[model_providers.x]\nbase_url = \"ftp://x\"\n",
            "base_url \"ftp://x\" is not an http(s) URL",
        ),
        (
            "[model_providers.x]\nbase_url = \"http://x\"\nhttp_headers = { \"bad header\" = \"v\" }\n",
            "[model_providers.x] http_headers: \"bad header\" is not a valid HTTP header name",
        ),
    ];
    for (text, want) in cases {
        let path = write(&dir, "c.toml", text);
        let err = parse_str(&path, text, &Overrides::default(), &env_of(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(want), "{want:?} not in {msg}");
        assert!(msg.contains("c.toml"), "{msg}");
    }
}

#[test]
fn built_in_providers_cannot_be_redefined() {
    let text = "[model_providers.openai]\nbase_url = \"http://evil/v1\"\n";
    let config = parse_str(
        Path::new("c.toml"),
        text,
        &Overrides::default(),
        &env_of(&[("CODEX_OSS_BASE_URL", "http://oss.local/v1")]),
    )
    .unwrap();
    assert_eq!(
        config.providers["openai"].base_url,
        "https://api.openai.com/v1"
    );
    assert_eq!(config.providers["ollama"].base_url, "http://oss.local/v1");
    assert_eq!(config.providers["lmstudio"].base_url, "http://oss.local/v1");
}

#[test]
fn bearer_token_and_env_key_precedence() {
    let text = "[model_providers.p]\nbase_url = \"http://p/v1\"\nenv_key = \"P_KEY\"\nexperimental_bearer_token = \"tok-file\"\n\
                [model_providers.q]\nbase_url = \"http://q/v1\"\nexperimental_bearer_token = \"tok-q\"\n";
    let config = parse_str(
        Path::new("c.toml"),
        text,
        &Overrides::default(),
        &env_of(&[]),
    )
    .unwrap();
    assert_eq!(
        config.providers["p"].api_key.as_ref().unwrap().expose(),
        "tok-file"
    );
    assert_eq!(
        config.providers["q"].api_key.as_ref().unwrap().expose(),
        "tok-q"
    );
    assert!(!config.providers["q"].missing_key());
    let config = parse_str(
        Path::new("c.toml"),
        text,
        &Overrides::default(),
        &env_of(&[("P_KEY", "from-env")]),
    )
    .unwrap();
    assert_eq!(
        config.providers["p"].api_key.as_ref().unwrap().expose(),
        "from-env"
    );
}

#[test]
fn model_prices_price_a_call_by_the_longest_matching_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "c.toml",
        r#"
[model_prices.gpt-5]
input_per_million = 1.25
output_per_million = 10.0

[model_prices.gpt-5-codex]
input_per_million = 2.0
cached_input_per_million = 0.5
output_per_million = 8.0
"#,
    );
    let overrides = Overrides {
        config_file: Some(path),
        ..Overrides::default()
    };
    let config = load(&overrides, &env_of(&[])).unwrap();
    let usage = keel_proto::v1::TokenUsage {
        input_tokens: 1_000_000,
        cached_input_tokens: 400_000,
        output_tokens: 100_000,
        ..Default::default()
    };
    // 600k uncached at 2.0, 400k cached at 0.5, 100k out at 8.0.
    let codex = config.price("gpt-5-codex-mini").unwrap();
    assert!((codex.cost_usd(&usage) - (1.2 + 0.2 + 0.8)).abs() < 1e-9);
    // No cached price: cached input costs the input price.
    let plain = config.price("gpt-5").unwrap();
    assert!((plain.cost_usd(&usage) - (1.25 + 1.0)).abs() < 1e-9);
    assert!(config.price("o3").is_none());

    let bad = write(
        &dir,
        "bad.toml",
        "[model_prices.gpt-5]\ninput_per_million = 1.0\noutput_per_milion = 2.0\n",
    );
    let err = load(
        &Overrides {
            config_file: Some(bad),
            ..Overrides::default()
        },
        &env_of(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("output_per_milion"), "{err}");
    let negative = write(
        &dir,
        "negative.toml",
        "[model_prices.gpt-5]\ninput_per_million = -1.0\noutput_per_million = 2.0\n",
    );
    let err = load(
        &Overrides {
            config_file: Some(negative),
            ..Overrides::default()
        },
        &env_of(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[model_prices.gpt-5]"), "{err}");
}
