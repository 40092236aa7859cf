//! Retry timing (Codex: `codex-rs/core/src/client.rs`): exponential backoff with jitter, and the delays
//! servers ask for in `Retry-After` headers and "try again in …" messages.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::{Duration, SystemTime};

use crate::config::RetryTiming;

/// `base × 2^(attempt−1) × jitter`, jitter in [0.9, 1.1), capped at the
/// timing's `max_delay`. `attempt` counts from 1.
pub fn backoff(timing: &RetryTiming, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let delay = timing.base_delay.as_secs_f64() * f64::from(1u32 << exp) * jitter();
    Duration::try_from_secs_f64(delay)
        .unwrap_or(timing.max_delay)
        .min(timing.max_delay)
}

/// A uniform value in [0.9, 1.1). `RandomState` is freshly keyed on every
/// call, which is random enough to spread retries apart without a crate.
fn jitter() -> f64 {
    let bits = RandomState::new().build_hasher().finish() >> 11;
    // 53 random bits over 2^53: a uniform value in [0, 1).
    let unit = bits as f64 / (1u64 << 53) as f64;
    0.9 + 0.2 * unit
}

/// A `Retry-After` header: delay-seconds or an HTTP date (past dates mean
/// now). `None` for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay in a rate-limit message such as "Please try again in 1.898s"
/// or "try again in 35ms" (Codex reads the same hint).
pub fn try_again_hint(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let rest = &lower[lower.find("try again in")? + "try again in".len()..];
    let rest = rest.trim_start();
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let value: f64 = rest[..number_len].parse().ok()?;
    let unit = rest[number_len..].trim_start();
    let secs = if unit.starts_with("ms") {
        value / 1000.0
    } else if unit.starts_with('s') {
        value
    } else {
        return None;
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let timing = RetryTiming::default();
        for attempt in 1..=5u32 {
            let want = 0.2 * f64::from(1u32 << (attempt - 1));
            for _ in 0..50 {
                let got = backoff(&timing, attempt).as_secs_f64();
                assert!(
                    got >= want * 0.9 - 1e-9 && got < want * 1.1,
                    "{attempt}: {got}"
                );
            }
        }
        assert_eq!(backoff(&timing, 100), timing.max_delay);
        let spread: std::collections::HashSet<_> =
            (0..20).map(|_| backoff(&timing, 1).as_nanos()).collect();
        assert!(spread.len() > 1, "jitter varies");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a past date means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn try_again_hints() {
        let cases = [
            (
                "Rate limit reached for gpt-5 in organization org-x on tokens per min. \
                 Please try again in 1.898s. Visit https://platform.openai.com",
                Some(Duration::from_millis(1898)),
            ),
            ("Try again in 35ms.", Some(Duration::from_millis(35))),
            ("try again in 2 seconds", Some(Duration::from_secs(2))),
            ("try again in a while", None),
            ("try again in 5 minutes", None),
            ("slow down", None),
        ];
        for (text, want) in cases {
            assert_eq!(try_again_hint(text), want, "{text}");
        }
    }
}
