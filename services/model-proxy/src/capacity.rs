//! Per-provider capacity: at most `max_concurrent` calls in flight and
//! `max_queued` waiting for a slot. Past that a call is refused at once, so
//! an overloaded proxy sheds load instead of piling up memory and latency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::error::ProxyError;

/// One limiter per provider id.
#[derive(Debug)]
pub struct Capacity {
    limiters: BTreeMap<String, Arc<Limiter>>,
}

#[derive(Debug)]
pub struct Limiter {
    provider: String,
    slots: Arc<Semaphore>,
    max_queued: usize,
    queued: AtomicUsize,
}

/// A slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Counts a waiter for as long as it waits, also when the wait is cancelled.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Capacity {
    pub fn new<'a>(providers: impl IntoIterator<Item = &'a str>, limits: Limits) -> Self {
        let limiters = providers
            .into_iter()
            .map(|id| {
                let limiter = Limiter {
                    provider: id.to_string(),
                    slots: Arc::new(Semaphore::new(limits.max_concurrent_per_provider.max(1))),
                    max_queued: limits.max_queued_per_provider,
                    queued: AtomicUsize::new(0),
                };
                (id.to_string(), Arc::new(limiter))
            })
            .collect();
        Self { limiters }
    }

    pub fn limiter(&self, provider: &str) -> Option<Arc<Limiter>> {
        self.limiters.get(provider).cloned()
    }
}

impl Limiter {
    /// A slot now, or after waiting in the queue; `AtCapacity` at once when
    /// the queue is full.
    pub async fn acquire(&self) -> Result<Slot, ProxyError> {
        self.acquire_noting_wait(|| ()).await
    }

    /// Like [`Limiter::acquire`]; `waiting` is called when the call joins the
    /// queue and what it returns is dropped when the wait ends (a metrics
    /// guard).
    pub async fn acquire_noting_wait<W>(
        &self,
        waiting: impl FnOnce() -> W,
    ) -> Result<Slot, ProxyError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_queued).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(ProxyError::AtCapacity {
                provider: self.provider.clone(),
            });
        }
        let _waiting = Waiting(&self.queued);
        let _noted = waiting();
        match Arc::clone(&self.slots).acquire_owned().await {
            Ok(permit) => Ok(Slot { _permit: permit }),
            // The semaphore is never closed; treat it as full if it were.
            Err(_) => Err(ProxyError::AtCapacity {
                provider: self.provider.clone(),
            }),
        }
    }

    pub fn in_flight(&self, max: usize) -> usize {
        max.saturating_sub(self.slots.available_permits())
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_refuses_at_once_and_slots_come_back() {
        let capacity = Capacity::new(
            ["p"],
            Limits {
                max_concurrent_per_provider: 1,
                max_queued_per_provider: 1,
            },
        );
        assert!(capacity.limiter("q").is_none());
        let limiter = capacity.limiter("p").unwrap();
        let first = limiter.acquire().await.unwrap();
        let waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.acquire().await.map(|_| ()) })
        };
        // Wait until the second call is queued.
        while limiter.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let Err(ProxyError::AtCapacity { provider }) = limiter.acquire().await else {
            panic!("the queue is full")
        };
        assert_eq!(provider, "p");
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(limiter.queued(), 0);
        assert_eq!(limiter.in_flight(1), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let capacity = Capacity::new(
            ["p"],
            Limits {
                max_concurrent_per_provider: 1,
                max_queued_per_provider: 1,
            },
        );
        let limiter = capacity.limiter("p").unwrap();
        let _held = limiter.acquire().await.unwrap();
        let waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.acquire().await.map(|_| ()) })
        };
        while limiter.queued() == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(limiter.queued(), 0);
    }
}
