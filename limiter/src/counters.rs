//! Counters: where the hits of each limit are kept — in this process's memory (one machine) or
//! in Redis (shared by every limiter node). Both backends implement the same semantics: a check
//! reads every counter it names, and charges all of them only if all admit the hits.

use std::time::Duration;

mod memory;
mod redis_counters;

pub use memory::MemoryCounters;
pub use redis_counters::RedisCounters;

/// One counter a check reads and, if the check is admitted, charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSpec {
    /// Identifies the counter; its hash tag (`{…}`) groups it for Redis Cluster.
    pub key: String,
    pub kind: CounterKind,
}

/// How a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// GCRA: `count` hits per `period_us`, a full burst allowed, then one every
    /// `period_us / count`.
    Rate { count: u64, period_us: i64 },
    /// At most `count` hits until `window_end_us` (the end of the current calendar window).
    Quota { count: u64, window_end_us: i64 },
}

impl CounterKind {
    /// The GCRA emission interval of a rate: at least one microsecond.
    fn interval(count: u64, period_us: i64) -> i64 {
        (period_us / i64::try_from(count).unwrap_or(i64::MAX)).max(1)
    }
}

/// One counter's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub allowed: bool,
    /// Hits still available after this check (as they stand, when the check was refused).
    pub remaining: u64,
    /// Until the counter is fully restored (rate) or its window ends (quota).
    pub reset: Duration,
    /// When refused: how long until a retry can succeed.
    pub retry_after: Option<Duration>,
}

/// The counters could not be reached (Redis down or too slow). Never a caller's fault.
#[derive(Debug, thiserror::Error)]
#[error("the counters are unavailable: {0}")]
pub struct Unavailable(pub String);

/// Where counters live.
pub enum Counters {
    Memory(MemoryCounters),
    Redis(RedisCounters),
}

impl Counters {
    /// Reads every counter at `now_us` and, if all admit `hits`, charges them all. `hits == 0`
    /// only reads.
    pub async fn apply(
        &self,
        specs: &[CounterSpec],
        hits: u64,
        now_us: i64,
    ) -> Result<Vec<Reading>, Unavailable> {
        match self {
            Counters::Memory(m) => Ok(m.apply(specs, hits, now_us)),
            Counters::Redis(r) => r.apply(specs, hits, now_us).await,
        }
    }

    /// Forgets the counters: their limits start afresh.
    pub async fn reset(&self, specs: &[CounterSpec]) -> Result<(), Unavailable> {
        match self {
            Counters::Memory(m) => {
                m.reset(specs);
                Ok(())
            }
            Counters::Redis(r) => r.reset(specs).await,
        }
    }
}

/// The state of one counter, as both backends store it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Theoretical arrival time (µs since the epoch).
    Rate(i64),
    /// Hits used in the window ending at the given time (µs).
    Quota { window_end_us: i64, used: u64 },
}

/// One counter's verdict: the reading, the hits available before the check, and the state to
/// store if the whole check is admitted. (The Redis script implements the same arithmetic.)
fn evaluate(slot: Option<Slot>, kind: CounterKind, hits: u64, now_us: i64) -> (Reading, u64, Slot) {
    let micros = |n: i64| Duration::from_micros(u64::try_from(n.max(0)).unwrap_or(0));
    match kind {
        CounterKind::Rate { count, period_us } => {
            let interval = CounterKind::interval(count, period_us);
            let tat = match slot {
                Some(Slot::Rate(tat)) => tat.max(now_us),
                Some(Slot::Quota { .. }) | None => now_us,
            };
            let hits = i64::try_from(hits).unwrap_or(i64::MAX);
            let new_tat = tat.saturating_add(interval.saturating_mul(hits));
            let before = u64::try_from((period_us - (tat - now_us)) / interval).unwrap_or(0);
            if new_tat - now_us <= period_us {
                let remaining = u64::try_from((period_us - (new_tat - now_us)) / interval);
                let reading = Reading {
                    allowed: true,
                    remaining: remaining.unwrap_or(0),
                    reset: micros(new_tat - now_us),
                    retry_after: None,
                };
                (reading, before, Slot::Rate(new_tat))
            } else {
                let reading = Reading {
                    allowed: false,
                    remaining: before,
                    reset: micros(tat - now_us),
                    retry_after: Some(micros(new_tat - now_us - period_us)),
                };
                (reading, before, Slot::Rate(tat))
            }
        }
        CounterKind::Quota {
            count,
            window_end_us,
        } => {
            let used = match slot {
                Some(Slot::Quota {
                    window_end_us: end,
                    used,
                }) if end == window_end_us => used,
                Some(_) | None => 0,
            };
            let reset = micros(window_end_us - now_us);
            let before = count.saturating_sub(used);
            let slot = |used| Slot::Quota {
                window_end_us,
                used,
            };
            if used.saturating_add(hits) <= count {
                let reading = Reading {
                    allowed: true,
                    remaining: count - used - hits,
                    reset,
                    retry_after: None,
                };
                (reading, before, slot(used + hits))
            } else {
                let reading = Reading {
                    allowed: false,
                    remaining: before,
                    reset,
                    retry_after: Some(reset),
                };
                (reading, before, slot(used))
            }
        }
    }
}
