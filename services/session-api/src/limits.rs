//! Per-tenant limits: turns per minute, open event streams, open sessions.
//! A call over a limit gets RESOURCE_EXHAUSTED naming the limit and its
//! flag, with `keel.v1.ErrorInfo` (class `tenant_limit`) and the standard
//! `google.rpc.RetryInfo` saying when to retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_proto::v1 as pb;
use tonic::{Code, Status};

/// The limits every tenant gets (session-api flags).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct TenantLimits {
    /// User turns (SendUserTurn, and SteerTurn that queues) a tenant may
    /// send per minute, as a token bucket (bursts up to the same number).
    #[arg(long, env = "KEEL_TENANT_TURNS_PER_MINUTE", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_turns_per_minute: u32,
    /// Event streams (StreamEvents) a tenant may have open at once.
    #[arg(long, env = "KEEL_TENANT_MAX_STREAMS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_max_streams: u32,
    /// Open (not closed) sessions a tenant may have; checked against
    /// Temporal's visibility store at CreateSession, so sessions created in
    /// the last moments may not be counted yet.
    #[arg(long, env = "KEEL_TENANT_MAX_OPEN_SESSIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_max_open_sessions: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            tenant_turns_per_minute: 600,
            tenant_max_streams: 1000,
            tenant_max_open_sessions: 10_000,
        }
    }
}

/// More buckets than this and the full ones are forgotten (a full bucket
/// is what a new one would be).
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub(crate) struct Limiter {
    limits: TenantLimits,
    turns: Mutex<HashMap<String, Bucket>>,
    streams: Arc<Mutex<HashMap<String, u32>>>,
}

/// An open stream, counted until dropped.
pub(crate) struct StreamSlot {
    tenant: String,
    streams: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = streams.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&self.tenant);
            }
        }
    }
}

pub(crate) fn exhausted(tenant: &str, what: String, flag: &str, wait: Option<Duration>) -> Status {
    let seconds = wait.map(|w| format!("; retry in {:.1} s", w.as_secs_f64().max(0.1)));
    pb::ErrorInfo::new("tenant_limit", wait.is_some())
        .with_retry_after(wait)
        .with_detail("tenant", tenant)
        .with_detail("limit", flag.trim_start_matches("--"))
        .into_status(
            Code::ResourceExhausted,
            format!(
                "tenant {tenant:?}: {what} (session-api {flag}){}",
                seconds.unwrap_or_default()
            ),
        )
}

impl Limiter {
    pub(crate) fn new(limits: TenantLimits) -> Self {
        Self {
            limits,
            turns: Mutex::new(HashMap::new()),
            streams: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub(crate) fn limits(&self) -> TenantLimits {
        self.limits
    }

    /// Takes one turn from the tenant's bucket.
    pub(crate) fn take_turn(&self, tenant: &str) -> Result<(), Status> {
        self.take_turn_at(tenant, Instant::now())
    }

    fn take_turn_at(&self, tenant: &str, now: Instant) -> Result<(), Status> {
        let capacity = f64::from(self.limits.tenant_turns_per_minute);
        let per_second = capacity / 60.0;
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        if turns.len() >= MAX_BUCKETS {
            turns.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < capacity
            });
        }
        let bucket = turns.entry(tenant.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
        Err(exhausted(
            tenant,
            format!(
                "more than {} user turns per minute",
                self.limits.tenant_turns_per_minute
            ),
            "--tenant-turns-per-minute",
            Some(wait),
        ))
    }

    /// Counts an open stream of the tenant until the slot is dropped.
    pub(crate) fn open_stream(&self, tenant: &str) -> Result<StreamSlot, Status> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let open = streams.entry(tenant.to_string()).or_insert(0);
        if *open >= self.limits.tenant_max_streams {
            return Err(exhausted(
                tenant,
                format!(
                    "{} event streams are open already",
                    self.limits.tenant_max_streams
                ),
                "--tenant-max-streams",
                None,
            ));
        }
        *open += 1;
        Ok(StreamSlot {
            tenant: tenant.to_string(),
            streams: self.streams.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(turns: u32, streams: u32) -> Limiter {
        Limiter::new(TenantLimits {
            tenant_turns_per_minute: turns,
            tenant_max_streams: streams,
            tenant_max_open_sessions: 1,
        })
    }

    #[test]
    fn turns_are_a_per_tenant_bucket_that_refills() {
        let l = limiter(3, 1);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take_turn_at("a", t0).unwrap();
        }
        let refused = l.take_turn_at("a", t0).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused.message().contains("--tenant-turns-per-minute"),
            "{}",
            refused.message()
        );
        // One token every 20 s at 3 per minute.
        let wait = keel_proto::errors::retry_info(&refused).unwrap();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        let info = pb::ErrorInfo::from_status(&refused).unwrap();
        assert_eq!(info.class, "tenant_limit");
        assert!(info.retryable);
        // Another tenant has its own bucket.
        l.take_turn_at("b", t0).unwrap();
        // After the wait, one more.
        l.take_turn_at("a", t0 + Duration::from_secs(20)).unwrap();
        assert!(l.take_turn_at("a", t0 + Duration::from_secs(20)).is_err());
    }

    #[test]
    fn streams_are_counted_until_dropped() {
        let l = limiter(1, 2);
        let first = l.open_stream("a").unwrap();
        let _second = l.open_stream("a").unwrap();
        let refused = l.open_stream("a").err().unwrap();
        assert!(refused.message().contains("--tenant-max-streams"));
        assert!(l.open_stream("b").is_ok(), "per tenant");
        drop(first);
        assert!(l.open_stream("a").is_ok());
    }
}
