//! The engine: turns a request's subject and the policies that apply into counters, asks the
//! counters, and answers for every limit at once. Either all limits admit the request and all
//! are charged, or none is charged. Time is an argument, so windows and refills are tested with
//! a controlled clock, not sleeps.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use time::{Date, OffsetDateTime, Time};

use crate::counters::{CounterKind, CounterSpec, Counters, Unavailable};
use crate::policy::{Catalog, Limit, LimitKind, MAX_COUNT, Policy, QuotaWindow, Scope};

/// Who is calling, what they call and from where.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub client: &'a str,
    pub profile: &'a str,
    pub collection: &'a str,
    pub operation: &'a str,
    pub source_ip: Option<IpAddr>,
}

/// One limit's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitStatus {
    pub policy: String,
    pub limit: String,
    pub allowed: bool,
    /// The count in force for this caller (after any override).
    pub quota: u64,
    /// The limit's window: the rate's period or the calendar window's length.
    pub window: Duration,
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

/// Why a check could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("unknown policy '{0}'")]
    UnknownPolicy(String),
    #[error("unknown limit '{limit}' in policy '{policy}'")]
    UnknownLimit { policy: String, limit: String },
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The policies in force and the counters they are counted in.
pub struct Engine {
    catalog: ArcSwap<Catalog>,
    counters: Counters,
}

impl Engine {
    pub fn new(catalog: Catalog, counters: Counters) -> Self {
        Self {
            catalog: ArcSwap::from_pointee(catalog),
            counters,
        }
    }

    /// The policies and overrides in force.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Puts a newer catalogue in force (an older or equal version is ignored).
    pub fn install(&self, catalog: Catalog) {
        self.catalog.rcu(|current| {
            if catalog.version > current.version || current.version == 0 {
                Arc::new(catalog.clone())
            } else {
                current.clone()
            }
        });
    }

    /// Checks `hits` against every limit of the named policies at `now`, charging them all if
    /// all admit the hits. `hits == 0` only reads.
    pub async fn check(
        &self,
        policies: &[&str],
        subject: &Subject<'_>,
        hits: u64,
        now: OffsetDateTime,
    ) -> Result<Decision, CheckError> {
        let catalog = self.catalog();
        let mut planned = Vec::new();
        for name in policies {
            let policy = catalog
                .policies
                .get(*name)
                .ok_or_else(|| CheckError::UnknownPolicy((*name).to_owned()))?;
            plan(&catalog, policy, None, subject, now, &mut planned);
        }
        self.decide(planned, hits, now).await
    }

    /// Forgets the counters of one policy (or one of its limits) for this subject.
    pub async fn reset(
        &self,
        policy: &str,
        limit: Option<&str>,
        subject: &Subject<'_>,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, CheckError> {
        let catalog = self.catalog();
        let policy = catalog
            .policies
            .get(policy)
            .ok_or_else(|| CheckError::UnknownPolicy(policy.to_owned()))?;
        if let Some(limit) = limit
            && !policy.limits.iter().any(|l| l.name == limit)
        {
            return Err(CheckError::UnknownLimit {
                policy: policy.name.clone(),
                limit: limit.to_owned(),
            });
        }
        let mut planned = Vec::new();
        plan(&catalog, policy, limit, subject, now, &mut planned);
        let specs: Vec<_> = planned.iter().map(|p| p.spec.clone()).collect();
        self.counters.reset(&specs).await?;
        Ok(planned.into_iter().map(|p| p.limit).collect())
    }

    async fn decide(
        &self,
        planned: Vec<Planned>,
        hits: u64,
        now: OffsetDateTime,
    ) -> Result<Decision, CheckError> {
        let specs: Vec<_> = planned.iter().map(|p| p.spec.clone()).collect();
        let readings = self.counters.apply(&specs, hits, micros(now)).await?;
        let limits: Vec<_> = planned
            .into_iter()
            .zip(readings)
            .map(|(p, r)| LimitStatus {
                policy: p.policy,
                limit: p.limit,
                allowed: r.allowed,
                quota: p.count,
                window: p.window,
                remaining: r.remaining,
                reset: r.reset,
                retry_after: r.retry_after,
                is_quota: matches!(p.spec.kind, CounterKind::Quota { .. }),
            })
            .collect();
        Ok(Decision {
            allowed: limits.iter().all(|l| l.allowed),
            limits,
        })
    }
}

/// A limit resolved for one subject: its counter and what to report about it.
struct Planned {
    policy: String,
    limit: String,
    count: u64,
    window: Duration,
    spec: CounterSpec,
}

/// The counters `policy` keeps for `subject` (only `only`'s, when given), with any override in
/// force applied to the principal-bound limits.
fn plan(
    catalog: &Catalog,
    policy: &Policy,
    only: Option<&str>,
    subject: &Subject<'_>,
    now: OffsetDateTime,
    out: &mut Vec<Planned>,
) {
    let multiplier = catalog
        .override_for(&policy.name, subject.client, subject.profile, now)
        .map(|o| o.multiplier);
    for limit in &policy.limits {
        if only.is_some_and(|name| name != limit.name) {
            continue;
        }
        let Some(scope_key) = scope_key(policy, limit, subject) else {
            continue;
        };
        let count = match (limit.kind, multiplier) {
            (LimitKind::Rate { count, .. } | LimitKind::Quota { count, .. }, Some(m))
                if limit.scope.is_principal() =>
            {
                ((count as f64 * m).round() as u64).clamp(1, MAX_COUNT)
            }
            (LimitKind::Rate { count, .. } | LimitKind::Quota { count, .. }, _) => count,
        };
        let (kind, window) = match limit.kind {
            LimitKind::Rate { per, .. } => {
                let period = per.duration();
                let kind = CounterKind::Rate {
                    count,
                    period_us: i64::try_from(period.as_micros()).unwrap_or(i64::MAX),
                };
                (kind, period)
            }
            LimitKind::Quota { window, .. } => {
                let (start, end) = window_bounds(now, window);
                let kind = CounterKind::Quota {
                    count,
                    window_end_us: micros(end),
                };
                (kind, (end - start).unsigned_abs())
            }
        };
        out.push(Planned {
            policy: policy.name.clone(),
            limit: limit.name.clone(),
            count,
            window,
            spec: CounterSpec {
                key: scope_key,
                kind,
            },
        });
    }
}

/// The counter a limit keeps for this subject, or `None` when the subject lacks what the scope
/// counts by (a source-IP limit for a request without an address; a profile limit when usage is
/// read for a whole client). The hash tag (`{…}`) groups the counters of one
/// principal, of one product, or of one address.
fn scope_key(policy: &Policy, limit: &Limit, s: &Subject<'_>) -> Option<String> {
    let needs = |field: &str| (!field.is_empty()).then_some(());
    match limit.scope {
        Scope::Client => needs(s.client)?,
        Scope::Profile => (needs(s.client)?, needs(s.profile)?).0,
        Scope::ClientCollection | Scope::ClientOperation => {
            (needs(s.client)?, needs(s.collection)?).0
        }
        Scope::Collection | Scope::Operation => needs(s.collection)?,
        Scope::SourceIp => {}
    }
    if matches!(limit.scope, Scope::ClientOperation | Scope::Operation) {
        needs(s.operation)?;
    }
    let name = format!("{}/{}", policy.name, limit.name);
    Some(match limit.scope {
        Scope::Client => format!("{{c:{}}}:{name}", s.client),
        Scope::Profile => format!("{{c:{}}}:{name}:p:{}", s.client, s.profile),
        Scope::ClientCollection => format!("{{c:{}}}:{name}:k:{}", s.client, s.collection),
        Scope::ClientOperation => format!(
            "{{c:{}}}:{name}:o:{}/{}",
            s.client, s.collection, s.operation
        ),
        Scope::Collection => format!("{{k:{}}}:{name}", s.collection),
        Scope::Operation => format!("{{k:{}}}:{name}:o:{}", s.collection, s.operation),
        Scope::SourceIp => format!("{{ip:{}}}:{name}", s.source_ip?),
    })
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// The calendar window containing `now` (UTC): its start and its end.
pub fn window_bounds(now: OffsetDateTime, window: QuotaWindow) -> (OffsetDateTime, OffsetDateTime) {
    let date = now.to_offset(time::UtcOffset::UTC).date();
    let (start, end): (Date, Date) = match window {
        QuotaWindow::Day => (date, date.next_day().unwrap_or(date)),
        QuotaWindow::Week => {
            let start =
                date - time::Duration::days(i64::from(date.weekday().number_days_from_monday()));
            (start, start + time::Duration::days(7))
        }
        QuotaWindow::Month => {
            let start = date.replace_day(1).unwrap_or(date);
            let month = date.month().next();
            let year = if month == time::Month::January {
                date.year() + 1
            } else {
                date.year()
            };
            (
                start,
                Date::from_calendar_date(year, month, 1).unwrap_or(date),
            )
        }
    };
    let at = |d: Date| d.with_time(Time::MIDNIGHT).assume_utc();
    (at(start), at(end))
}

/// When the calendar window containing `now` ends (UTC).
pub fn window_end(now: OffsetDateTime, window: QuotaWindow) -> OffsetDateTime {
    window_bounds(now, window).1
}

#[cfg(test)]
mod tests;
