//! The provider's rate limits from its response headers, for `token_count`
//! (Codex: `codex-rs/codex-api/src/rate_limits.rs`, which reads the
//! `x-codex-primary-*` and `x-codex-secondary-*` headers of its backend).
//! A provider that sends the OpenAI API's `x-ratelimit-*` headers instead
//! gets them as the two windows: tokens (primary) and requests (secondary).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_proto::v1::{RateLimitSnapshot, RateLimitWindow};
use reqwest::header::HeaderMap;

/// What `headers` say, or `None` when they say nothing of rate limits.
pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<RateLimitSnapshot> {
    let codex = |which: &str| codex_window(headers, which, now);
    let (primary, secondary) = match (codex("primary"), codex("secondary")) {
        (None, None) => (
            openai_window(headers, "tokens", now),
            openai_window(headers, "requests", now),
        ),
        found => found,
    };
    (primary.is_some() || secondary.is_some()).then_some(RateLimitSnapshot { primary, secondary })
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `x-codex-<which>-used-percent`, `-window-minutes`, and `-reset-at`
/// (Unix seconds) or `-reset-after-seconds`.
fn codex_window(headers: &HeaderMap, which: &str, now: SystemTime) -> Option<RateLimitWindow> {
    let get = |field: &str| text(headers, &format!("x-codex-{which}-{field}"));
    let used_percent: f64 = get("used-percent")?
        .parse()
        .ok()
        .filter(|p: &f64| p.is_finite())?;
    let window_minutes = get("window-minutes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let resets_at = get("reset-at")
        .and_then(|v| v.parse::<i64>().ok())
        .or_else(|| {
            let after: u64 = get("reset-after-seconds")?.parse().ok()?;
            Some(unix(now + Duration::from_secs(after)))
        })
        .unwrap_or(0);
    Some(RateLimitWindow {
        used_percent: used_percent.clamp(0.0, 100.0),
        window_minutes,
        resets_at,
    })
}

/// `x-ratelimit-limit-<what>`, `x-ratelimit-remaining-<what>` and
/// `x-ratelimit-reset-<what>` (a duration such as `6m0s` or `20ms`).
fn openai_window(headers: &HeaderMap, what: &str, now: SystemTime) -> Option<RateLimitWindow> {
    let get = |field: &str| text(headers, &format!("x-ratelimit-{field}-{what}"));
    let limit: f64 = get("limit")?.parse().ok().filter(|l: &f64| *l > 0.0)?;
    let remaining: f64 = get("remaining")?.parse().ok()?;
    let used_percent = ((limit - remaining) / limit * 100.0).clamp(0.0, 100.0);
    let resets_at = get("reset")
        .and_then(go_duration)
        .map_or(0, |d| unix(now + d));
    Some(RateLimitWindow {
        used_percent,
        window_minutes: 0,
        resets_at,
    })
}

/// A Go-style duration as OpenAI sends it: `1h2m3.5s`, `6m0s`, `20ms`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let number: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let (scale, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn codex_headers_give_both_windows() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let snap = from_headers(
            &headers(&[
                ("x-codex-primary-used-percent", "42.5"),
                ("x-codex-primary-window-minutes", "300"),
                ("x-codex-primary-reset-at", "1704069000"),
                ("x-codex-secondary-used-percent", "13"),
                ("x-codex-secondary-window-minutes", "10080"),
                ("x-codex-secondary-reset-after-seconds", "60"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            snap.primary,
            Some(RateLimitWindow {
                used_percent: 42.5,
                window_minutes: 300,
                resets_at: 1_704_069_000
            })
        );
        assert_eq!(
            snap.secondary,
            Some(RateLimitWindow {
                used_percent: 13.0,
                window_minutes: 10_080,
                resets_at: 1_060
            })
        );
    }

    #[test]
    fn openai_headers_are_read_when_codex_ones_are_absent() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let snap = from_headers(
            &headers(&[
                ("x-ratelimit-limit-tokens", "10000"),
                ("x-ratelimit-remaining-tokens", "7500"),
                ("x-ratelimit-reset-tokens", "6m0s"),
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-reset-requests", "1s"),
            ]),
            now,
        )
        .unwrap();
        let primary = snap.primary.unwrap();
        assert_eq!((primary.used_percent, primary.resets_at), (25.0, 1_360));
        let secondary = snap.secondary.unwrap();
        assert!((secondary.used_percent - 100.0 / 60.0).abs() < 1e-9);
        assert_eq!(secondary.resets_at, 1_001);
    }

    #[test]
    fn nothing_or_nonsense_is_no_snapshot() {
        let now = SystemTime::now();
        assert_eq!(from_headers(&HeaderMap::new(), now), None);
        assert_eq!(
            from_headers(&headers(&[("x-codex-primary-used-percent", "lots")]), now),
            None
        );
        assert_eq!(
            from_headers(
                &headers(&[
                    ("x-ratelimit-limit-tokens", "0"),
                    ("x-ratelimit-remaining-tokens", "0")
                ]),
                now
            ),
            None
        );
        assert_eq!(
            go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(go_duration("5x"), None);
        assert_eq!(go_duration("m"), None);
    }
}
