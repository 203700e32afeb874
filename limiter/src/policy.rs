//! Quota policies: named sets of limits, each a smooth rate (N per second/minute/hour) or a
//! calendar quota (N per UTC day/week/month), counted per scope; per-principal overrides; and
//! the catalogue holding both, which is what the limiter stores.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A named set of limits. Profiles and collections refer to policies by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    pub limits: Vec<Limit>,
    /// What a gateway does when it cannot get an answer from the limiter.
    #[serde(default, skip_serializing_if = "FailureMode::is_default")]
    pub on_unavailable: FailureMode,
}

/// What a gateway does for a policy when the limiter (or its Redis) cannot answer in time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Refuse the request: 503 `platform_degraded`. The safe default.
    #[default]
    FailClosed,
    /// Count the policy's limits on the gateway node itself until the limiter is back.
    LocalLimit,
}

impl FailureMode {
    fn is_default(&self) -> bool {
        *self == FailureMode::default()
    }
}

/// One limit of a policy. Written `{name, scope, count, per}` for a rate or
/// `{name, scope, count, window}` for a quota.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LimitFields", into = "LimitFields")]
pub struct Limit {
    /// Unique within the policy; reported to callers (`RateLimit-Policy`).
    pub name: String,
    /// What one counter is kept for.
    pub scope: Scope,
    pub kind: LimitKind,
}

/// A limit as written in files: exactly one of `per` (a rate) and `window` (a quota).
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct LimitFields {
    name: String,
    scope: Scope,
    count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per: Option<RatePeriod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window: Option<QuotaWindow>,
}

impl TryFrom<LimitFields> for Limit {
    type Error = String;

    fn try_from(f: LimitFields) -> Result<Self, String> {
        let kind = match (f.per, f.window) {
            (Some(per), None) => LimitKind::Rate {
                count: f.count,
                per,
            },
            (None, Some(window)) => LimitKind::Quota {
                count: f.count,
                window,
            },
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!(
                    "limit {}: give either `per` (a rate) or `window` (a quota)",
                    f.name
                ));
            }
        };
        Ok(Limit {
            name: f.name,
            scope: f.scope,
            kind,
        })
    }
}

impl From<Limit> for LimitFields {
    fn from(l: Limit) -> Self {
        let (count, per, window) = match l.kind {
            LimitKind::Rate { count, per } => (count, Some(per), None),
            LimitKind::Quota { count, window } => (count, None, Some(window)),
        };
        LimitFields {
            name: l.name,
            scope: l.scope,
            count,
            per,
            window,
        }
    }
}

impl schemars::JsonSchema for Limit {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Limit".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        LimitFields::json_schema(generator)
    }
}

/// A rate or a quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// At most `count` per `per`, spread smoothly (GCRA): a full burst of `count` is allowed,
    /// then one more every `per / count`.
    Rate { count: u64, per: RatePeriod },
    /// At most `count` per calendar window in UTC.
    Quota { count: u64, window: QuotaWindow },
}

/// The period of a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
}

impl RatePeriod {
    pub fn duration(self) -> Duration {
        match self {
            RatePeriod::Second => Duration::from_secs(1),
            RatePeriod::Minute => Duration::from_secs(60),
            RatePeriod::Hour => Duration::from_secs(3600),
        }
    }
}

/// The calendar window of a quota (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaWindow {
    Day,
    /// Monday 00:00 UTC to the next Monday.
    Week,
    Month,
}

/// What a limit counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Client,
    Profile,
    ClientCollection,
    ClientOperation,
    /// A product-wide cap protecting the upstream, across all callers.
    Collection,
    Operation,
    SourceIp,
}

/// Scales the principal-bound limits of one policy for one client (or one of its profiles),
/// e.g. "partner acme gets 2x this month". Product-wide and source-IP limits are not affected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub policy: String,
    pub client: String,
    /// Only this profile of the client; absent for all of its profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Every principal-bound count of the policy is multiplied by this (0.01 to 1000).
    pub multiplier: f64,
    /// When the override lapses; absent for never.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<OffsetDateTime>,
    /// Why it was granted, for the next operator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Override {
    /// Whether this override is for the same principal as `other` (so one replaces the other).
    pub fn same_target(&self, other: &Override) -> bool {
        self.policy == other.policy && self.client == other.client && self.profile == other.profile
    }

    /// Checks the override's shape.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.policy.is_empty() || self.client.is_empty() {
            return Err(PolicyError::OverrideTarget);
        }
        if !(MIN_MULTIPLIER..=MAX_MULTIPLIER).contains(&self.multiplier) {
            return Err(PolicyError::BadMultiplier);
        }
        Ok(())
    }
}

/// The smallest override multiplier.
pub const MIN_MULTIPLIER: f64 = 0.01;
/// The largest override multiplier.
pub const MAX_MULTIPLIER: f64 = 1000.0;

/// Every policy and override, with the version of the last change. This is what the limiter
/// stores and what every limiter node serves from memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Increases by one with every change.
    pub version: u64,
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    #[serde(default)]
    pub overrides: Vec<Override>,
}

impl Catalog {
    /// The override in force for this principal under `policy` at `now`: the profile's own if
    /// it has one, else the client's.
    pub fn override_for(
        &self,
        policy: &str,
        client: &str,
        profile: &str,
        now: OffsetDateTime,
    ) -> Option<&Override> {
        let live = |o: &&Override| {
            o.policy == policy && o.client == client && o.expires_at.is_none_or(|at| at > now)
        };
        let mut client_wide = None;
        for o in self.overrides.iter().filter(live) {
            match &o.profile {
                Some(p) if p == profile => return Some(o),
                Some(_) => {}
                None => client_wide = Some(o),
            }
        }
        client_wide
    }
}

impl Scope {
    /// Whether the limit is counted per principal (client or profile), so that a principal's
    /// override applies to it.
    pub fn is_principal(self) -> bool {
        match self {
            Scope::Client | Scope::Profile | Scope::ClientCollection | Scope::ClientOperation => {
                true
            }
            Scope::Collection | Scope::Operation | Scope::SourceIp => false,
        }
    }
}

/// Why a policy or override was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("a policy needs a name")]
    NoName,
    #[error("a policy name is 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    BadName,
    #[error("limit '{0}': a limit name is 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    BadLimitName(String),
    #[error("an override needs a policy and a client")]
    OverrideTarget,
    #[error("an override's multiplier must be between {MIN_MULTIPLIER} and {MAX_MULTIPLIER}")]
    BadMultiplier,
    #[error("policy {0} has no limits")]
    NoLimits(String),
    #[error("limit {0} is given twice")]
    DuplicateLimit(String),
    #[error("limit {0}: the count must be between 1 and {MAX_COUNT}")]
    BadCount(String),
}

/// The largest count a limit may have.
pub const MAX_COUNT: u64 = 1_000_000_000;

impl Policy {
    /// Checks the policy's shape.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.name.trim().is_empty() {
            return Err(PolicyError::NoName);
        }
        if !is_name(&self.name) {
            return Err(PolicyError::BadName);
        }
        if self.limits.is_empty() {
            return Err(PolicyError::NoLimits(self.name.clone()));
        }
        let mut names = std::collections::HashSet::new();
        for limit in &self.limits {
            if !is_name(&limit.name) {
                return Err(PolicyError::BadLimitName(limit.name.clone()));
            }
            if !names.insert(limit.name.as_str()) {
                return Err(PolicyError::DuplicateLimit(limit.name.clone()));
            }
            let count = match limit.kind {
                LimitKind::Rate { count, .. } | LimitKind::Quota { count, .. } => count,
            };
            if !(1..=MAX_COUNT).contains(&count) {
                return Err(PolicyError::BadCount(limit.name.clone()));
            }
        }
        Ok(())
    }
}

/// Policy and limit names appear in Redis keys and HTTP headers: a short, plain alphabet.
pub fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
