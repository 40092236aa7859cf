//! Per-call sampling controls (reasoning, verbosity, service tier, output
//! schema): their accepted values, and how a request's value combines with
//! the configured default (config.toml's `model_reasoning_effort` etc.).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use crate::error::ProxyError;

/// Declares a closed set of lowercase values parsed from requests and from
/// config.toml alike, so both reject the same typos.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "{other:?} is not one of {}",
                        Self::ALL.join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// `model_reasoning_effort`.
    ReasoningEffort {
        None => "none",
        Minimal => "minimal",
        Low => "low",
        Medium => "medium",
        High => "high",
        XHigh => "xhigh",
    }
);

wire_enum!(
    /// `model_reasoning_summary`.
    ReasoningSummary {
        Auto => "auto",
        Concise => "concise",
        Detailed => "detailed",
        None => "none",
    }
);

wire_enum!(
    /// `model_verbosity`.
    Verbosity {
        Low => "low",
        Medium => "medium",
        High => "high",
    }
);

wire_enum!(
    /// `service_tier`. Codex calls the priority tier `fast`.
    ServiceTier {
        Fast => "fast",
        Flex => "flex",
        Priority => "priority",
        Default => "default",
        Auto => "auto",
    }
);

wire_enum!(
    /// `personality`: the tone section of the base instructions.
    Personality {
        None => "none",
        Friendly => "friendly",
        Pragmatic => "pragmatic",
    }
);

impl ServiceTier {
    /// The value the vendor understands.
    pub fn wire_value(self) -> &'static str {
        match self {
            Self::Fast | Self::Priority => "priority",
            other => other.as_str(),
        }
    }
}

/// Defaults from config.toml (the active profile's, else the top level's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallDefaults {
    pub reasoning_effort: Option<ReasoningEffort>,
    pub reasoning_summary: Option<ReasoningSummary>,
    pub verbosity: Option<Verbosity>,
    pub service_tier: Option<ServiceTier>,
    pub personality: Option<Personality>,
}

/// The controls in force for one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallControls {
    pub reasoning_effort: Option<ReasoningEffort>,
    pub reasoning_summary: Option<ReasoningSummary>,
    pub verbosity: Option<Verbosity>,
    pub service_tier: Option<ServiceTier>,
    /// The final answer's JSON Schema.
    pub output_schema: Option<Value>,
    pub personality: Option<Personality>,
}

/// The raw request fields, as strings (empty = use the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestedControls<'a> {
    pub reasoning_effort: &'a str,
    pub reasoning_summary: &'a str,
    pub verbosity: &'a str,
    pub service_tier: &'a str,
    pub final_output_json_schema: &'a str,
    pub personality: &'a str,
}

impl CallControls {
    /// The request's values where given, else the defaults. An unknown value
    /// is INVALID_ARGUMENT naming the field.
    pub fn resolve(
        req: RequestedControls<'_>,
        defaults: &CallDefaults,
    ) -> Result<Self, ProxyError> {
        Ok(Self {
            reasoning_effort: pick("reasoning_effort", req.reasoning_effort)?
                .or(defaults.reasoning_effort),
            reasoning_summary: pick("reasoning_summary", req.reasoning_summary)?
                .or(defaults.reasoning_summary),
            verbosity: pick("verbosity", req.verbosity)?.or(defaults.verbosity),
            service_tier: pick("service_tier", req.service_tier)?.or(defaults.service_tier),
            output_schema: schema(req.final_output_json_schema)?,
            personality: pick("personality", req.personality)?.or(defaults.personality),
        })
    }

    /// Whether to ask for reasoning (and its encrypted content) at all.
    pub fn wants_reasoning(&self) -> bool {
        self.reasoning_effort.is_some() || self.reasoning_summary.is_some()
    }
}

fn pick<T: FromStr<Err = String>>(field: &str, value: &str) -> Result<Option<T>, ProxyError> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e| ProxyError::InvalidRequest(format!("{field}: {e}")))
}

fn schema(text: &str) -> Result<Option<Value>, ProxyError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(ProxyError::InvalidRequest(
            "final_output_json_schema must be a JSON object".into(),
        )),
        Err(e) => Err(ProxyError::InvalidRequest(format!(
            "final_output_json_schema is not valid JSON: {e}"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn request_values_win_over_defaults_and_bad_values_are_rejected() {
        let defaults = CallDefaults {
            reasoning_effort: Some(ReasoningEffort::Low),
            reasoning_summary: Some(ReasoningSummary::Auto),
            verbosity: None,
            service_tier: Some(ServiceTier::Flex),
            personality: Some(Personality::Friendly),
        };
        let c = CallControls::resolve(
            RequestedControls {
                reasoning_effort: "xhigh",
                service_tier: "fast",
                final_output_json_schema: r#"{"type":"object"}"#,
                ..RequestedControls::default()
            },
            &defaults,
        )
        .unwrap();
        assert_eq!(c.reasoning_effort, Some(ReasoningEffort::XHigh));
        assert_eq!(c.reasoning_summary, Some(ReasoningSummary::Auto));
        assert_eq!(c.verbosity, None);
        assert_eq!(
            c.service_tier.map(ServiceTier::wire_value),
            Some("priority")
        );
        assert!(c.output_schema.is_some());
        assert!(c.wants_reasoning());

        let none = CallControls::resolve(RequestedControls::default(), &CallDefaults::default());
        assert!(!none.unwrap().wants_reasoning());

        for (req, field) in [
            (
                RequestedControls {
                    reasoning_effort: "max",
                    ..Default::default()
                },
                "reasoning_effort",
            ),
            (
                RequestedControls {
                    verbosity: "loud",
                    ..Default::default()
                },
                "verbosity",
            ),
            (
                RequestedControls {
                    final_output_json_schema: "[1]",
                    ..Default::default()
                },
                "final_output_json_schema",
            ),
            (
                RequestedControls {
                    final_output_json_schema: "{",
                    ..Default::default()
                },
                "final_output_json_schema",
            ),
        ] {
            let Err(ProxyError::InvalidRequest(msg)) =
                CallControls::resolve(req, &CallDefaults::default())
            else {
                panic!("{field} must be rejected")
            };
            assert!(msg.starts_with(field), "{msg}");
        }
    }
}
