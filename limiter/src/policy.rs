//! Quota policies: named sets of limits, each a smooth rate (N per second/minute/hour) or a
//! calendar quota (N per UTC day/week/month), counted per scope.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A named set of limits. Profiles and collections refer to policies by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    pub limits: Vec<Limit>,
}

/// One limit of a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Unique within the policy; reported to callers (`RateLimit-Policy`).
    pub name: String,
    /// What one counter is kept for.
    pub scope: Scope,
    #[serde(flatten)]
    pub kind: LimitKind,
}

/// A rate or a quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", untagged)]
pub enum LimitKind {
    /// At most `count` per `per`, spread smoothly (GCRA): a full burst of `count` is allowed,
    /// then one more every `per / count`.
    Rate { count: u64, per: RatePeriod },
    /// At most `count` per calendar window in UTC.
    Quota { count: u64, window: QuotaWindow },
}

/// The period of a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaWindow {
    Day,
    /// Monday 00:00 UTC to the next Monday.
    Week,
    Month,
}

/// What a limit counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// Why a policy was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("a policy needs a name")]
    NoName,
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
        if self.limits.is_empty() {
            return Err(PolicyError::NoLimits(self.name.clone()));
        }
        let mut names = std::collections::HashSet::new();
        for limit in &self.limits {
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
