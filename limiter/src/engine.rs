//! The in-memory engine: checks one request against every applicable limit at once. Either all
//! limits admit it and all are charged, or none is charged. Time is an argument, so windows and
//! refills are tested with a controlled clock, not sleeps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use time::{Date, OffsetDateTime, Time};

use crate::policy::{Limit, LimitKind, Policy, QuotaWindow, Scope};

/// Who is calling, what they call and from where, and how many hits to count.
#[derive(Clone, Copy, Debug)]
pub struct CheckRequest<'a> {
    pub client: &'a str,
    pub profile: &'a str,
    pub collection: &'a str,
    pub operation: &'a str,
    pub source_ip: Option<IpAddr>,
    pub hits: u64,
}

/// One limit's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitStatus {
    pub policy: String,
    pub limit: String,
    pub allowed: bool,
    /// Hits still available after this request (before it, when it was refused).
    pub remaining: u64,
    /// Time until the limit is fully restored (rate) or the window ends (quota).
    pub reset: Duration,
    /// When refused: how long until a retry can succeed.
    pub retry_after: Option<Duration>,
    pub is_quota: bool,
}

/// The answer for a request: allowed only if every limit allows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limits: Vec<LimitStatus>,
}

/// Counters for every key, bounded in number.
pub struct MemoryEngine {
    state: Mutex<State>,
    max_keys: usize,
}

#[derive(Default)]
struct State {
    /// Theoretical arrival time (ns since the epoch) per rate key.
    rates: HashMap<String, i128>,
    /// Window end (unix seconds) and hits used per quota key.
    quotas: HashMap<String, (i64, u64)>,
}

/// A counter change to make if the request is admitted.
enum Charge {
    Rate(String, i128),
    Quota(String, i64, u64),
}

impl MemoryEngine {
    /// An engine keeping at most about `max_keys` counters; idle ones are evicted first.
    pub fn new(max_keys: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_keys,
        }
    }

    /// Checks `req` against every limit of `policies` at time `now`.
    pub fn check(
        &self,
        policies: &[&Policy],
        req: &CheckRequest<'_>,
        now: OffsetDateTime,
    ) -> Decision {
        let now_ns = now.unix_timestamp_nanos();
        let mut state = self
            .state
            .lock()
            .expect("the engine lock is never poisoned");
        let mut limits = Vec::new();
        let mut charges = Vec::new();
        for policy in policies {
            for limit in &policy.limits {
                let Some(scope_key) = scope_key(limit.scope, req) else {
                    continue;
                };
                let key = format!("{}|{}|{scope_key}", policy.name, limit.name);
                let (status, charge, before) =
                    evaluate(&state, policy, limit, key, req.hits, now, now_ns);
                charges.push((charge, before));
                limits.push(status);
            }
        }
        let allowed = limits.iter().all(|l| l.allowed);
        if !allowed {
            // Nothing is charged, so every limit reports what it had before the request.
            for (status, (_, before)) in limits.iter_mut().zip(&charges) {
                status.remaining = *before;
            }
        } else {
            for (charge, _) in charges {
                match charge {
                    Charge::Rate(key, tat) => {
                        state.rates.insert(key, tat);
                    }
                    Charge::Quota(key, end, used) => {
                        state.quotas.insert(key, (end, used));
                    }
                }
            }
            if state.rates.len() + state.quotas.len() > self.max_keys {
                state.evict_idle(now_ns, now.unix_timestamp());
            }
        }
        Decision { allowed, limits }
    }

    /// How many counters are held.
    pub fn len(&self) -> usize {
        let state = self
            .state
            .lock()
            .expect("the engine lock is never poisoned");
        state.rates.len() + state.quotas.len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// Drops counters that hold nothing any more: drained rates and ended quota windows.
    fn evict_idle(&mut self, now_ns: i128, now_s: i64) {
        self.rates.retain(|_, tat| *tat > now_ns);
        self.quotas.retain(|_, (end, _)| *end > now_s);
    }
}

fn evaluate(
    state: &State,
    policy: &Policy,
    limit: &Limit,
    key: String,
    hits: u64,
    now: OffsetDateTime,
    now_ns: i128,
) -> (LimitStatus, Charge, u64) {
    let status = |allowed, remaining, reset: Duration, retry_after, is_quota| LimitStatus {
        policy: policy.name.clone(),
        limit: limit.name.clone(),
        allowed,
        remaining,
        reset,
        retry_after,
        is_quota,
    };
    match limit.kind {
        LimitKind::Rate { count, per } => {
            // GCRA: each hit advances the theoretical arrival time by one emission interval;
            // a request fits while that time stays within one period of now.
            let period = per.duration().as_nanos() as i128;
            let interval = (period / count as i128).max(1);
            let tat = state.rates.get(&key).copied().unwrap_or(now_ns).max(now_ns);
            let new_tat = tat + interval * hits as i128;
            let before = ((period - (tat - now_ns)) / interval).max(0) as u64;
            if new_tat - now_ns <= period {
                let remaining = ((period - (new_tat - now_ns)) / interval) as u64;
                let s = status(true, remaining, nanos(new_tat - now_ns), None, false);
                (s, Charge::Rate(key, new_tat), before)
            } else {
                let retry = nanos(new_tat - now_ns - period);
                let s = status(false, before, nanos(tat - now_ns), Some(retry), false);
                (s, Charge::Rate(key, tat), before)
            }
        }
        LimitKind::Quota { count, window } => {
            let end = window_end(now, window).unix_timestamp();
            let used = match state.quotas.get(&key) {
                Some((stored_end, used)) if *stored_end == end => *used,
                Some(_) | None => 0,
            };
            let reset = Duration::from_secs((end - now.unix_timestamp()).max(0) as u64);
            let before = count.saturating_sub(used);
            if used.saturating_add(hits) <= count {
                let used = used + hits;
                let s = status(true, count - used, reset, None, true);
                (s, Charge::Quota(key, end, used), before)
            } else {
                let s = status(false, before, reset, Some(reset), true);
                (s, Charge::Quota(key, end, used), before)
            }
        }
    }
}

fn nanos(n: i128) -> Duration {
    Duration::from_nanos(u64::try_from(n.max(0)).unwrap_or(u64::MAX))
}

/// The counter a limit keeps for this request, or `None` when the scope does not apply (a
/// source-IP limit for a request without one).
fn scope_key(scope: Scope, r: &CheckRequest<'_>) -> Option<String> {
    Some(match scope {
        Scope::Client => format!("client:{}", r.client),
        Scope::Profile => format!("profile:{}/{}", r.client, r.profile),
        Scope::ClientCollection => format!("client-collection:{}/{}", r.client, r.collection),
        Scope::ClientOperation => {
            format!(
                "client-operation:{}/{}/{}",
                r.client, r.collection, r.operation
            )
        }
        Scope::Collection => format!("collection:{}", r.collection),
        Scope::Operation => format!("operation:{}/{}", r.collection, r.operation),
        Scope::SourceIp => format!("ip:{}", r.source_ip?),
    })
}

/// When the calendar window containing `now` ends (UTC).
pub fn window_end(now: OffsetDateTime, window: QuotaWindow) -> OffsetDateTime {
    let now = now.to_offset(time::UtcOffset::UTC);
    let date = now.date();
    let next: Date = match window {
        QuotaWindow::Day => date.next_day().unwrap_or(date),
        QuotaWindow::Week => {
            let days_left = 7 - i64::from(date.weekday().number_days_from_monday());
            date + time::Duration::days(days_left)
        }
        QuotaWindow::Month => {
            let month = date.month().next();
            let year = if month == time::Month::January {
                date.year() + 1
            } else {
                date.year()
            };
            Date::from_calendar_date(year, month, 1).unwrap_or(date)
        }
    };
    next.with_time(Time::MIDNIGHT).assume_utc()
}

#[cfg(test)]
mod tests;
