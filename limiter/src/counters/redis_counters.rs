//! Counters in Redis, shared by every limiter node. A check is one Lua script call
//! (`check.lua`): one round trip for all of its limits, atomic, so limits hold exactly across
//! any number of limiter nodes.
//!
//! Keys: `<prefix>:{<tag>}:<policy>/<limit>[:<subject>][:w<window end>]`. The hash tag groups a
//! principal's counters (`{c:<client>}`), a product's (`{k:<collection>}`) and a source
//! address's (`{ip:<address>}`), so a Redis Cluster spreads them over slots by principal and
//! product. A check that mixes groups runs as one script on a single Redis server (a
//! standalone or a replicated primary); Redis Cluster would need a script per group, which this
//! backend does not do yet.

use std::time::Duration;

use bb8::Pool;

use super::{CounterKind, CounterSpec, Reading, Unavailable};
use crate::redis_pool::{Connector, RedisSettings, pool, unavailable};

/// Counters in Redis, over a bb8 pool of multiplexed, self-reconnecting connections.
pub struct RedisCounters {
    pool: Pool<Connector>,
    prefix: String,
    script: redis::Script,
}

impl RedisCounters {
    /// A pool for `settings`; connections are made on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, Unavailable> {
        Ok(Self {
            pool: pool(settings)?,
            prefix: settings.prefix.clone(),
            script: redis::Script::new(include_str!("check.lua")),
        })
    }

    pub(super) async fn apply(
        &self,
        specs: &[CounterSpec],
        hits: u64,
        now_us: i64,
    ) -> Result<Vec<Reading>, Unavailable> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(now_us).arg(hits);
        for spec in specs {
            invocation.key(self.key(spec));
            match spec.kind {
                CounterKind::Rate { count, period_us } => {
                    invocation.arg("r").arg(count).arg(period_us);
                }
                CounterKind::Quota {
                    count,
                    window_end_us,
                } => {
                    invocation.arg("q").arg(count).arg(window_end_us);
                }
            }
        }
        // Connections are multiplexed: take a handle and give the pooled one back at once, so
        // concurrent checks are pipelined on the pool's few connections.
        let mut conn = self.pool.get().await.map_err(unavailable)?.clone();
        let rows: Vec<(i64, i64, i64, i64)> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if rows.len() != specs.len() {
            return Err(Unavailable(format!(
                "the check script answered {} counters for {}",
                rows.len(),
                specs.len()
            )));
        }
        let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
        Ok(rows
            .into_iter()
            .map(|(allowed, remaining, reset, retry)| Reading {
                allowed: allowed == 1,
                remaining: u64::try_from(remaining).unwrap_or(0),
                reset: micros(reset),
                retry_after: (allowed != 1).then(|| micros(retry)),
            })
            .collect())
    }

    pub(super) async fn reset(&self, specs: &[CounterSpec]) -> Result<(), Unavailable> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        for spec in specs {
            // One key per call: keys of different hash tags may live on different nodes.
            let () = redis::cmd("DEL")
                .arg(self.key(spec))
                .query_async(&mut *conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    fn key(&self, spec: &CounterSpec) -> String {
        match spec.kind {
            CounterKind::Rate { .. } => format!("{}:{}", self.prefix, spec.key),
            // A quota's counter is per window, so a new window starts at zero by itself.
            CounterKind::Quota { window_end_us, .. } => {
                format!(
                    "{}:{}:w{}",
                    self.prefix,
                    spec.key,
                    window_end_us / 1_000_000
                )
            }
        }
    }
}
