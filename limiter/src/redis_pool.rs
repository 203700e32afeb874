//! The connection pool to Redis shared by the counters and the definitions: bb8 over
//! multiplexed connections that reconnect by themselves when Redis returns.

use std::time::Duration;

use bb8::Pool;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::counters::Unavailable;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`. (TLS to Redis, `rediss://`, is not supported
    /// yet.)
    pub url: String,
    /// Prepended to every key, so several deployments (or tests) can share one Redis.
    pub prefix: String,
    /// Connections in the pool; each multiplexes many concurrent checks.
    pub pool_size: u32,
    /// How long one Redis operation may take before it fails as unavailable.
    pub timeout: Duration,
}

/// A bb8 pool of Redis connections for `settings`.
pub(crate) fn pool(settings: &RedisSettings) -> Result<Pool<Connector>, Unavailable> {
    if settings.prefix.is_empty() || settings.prefix.contains(['{', '}']) {
        return Err(Unavailable(
            "the Redis key prefix must be non-empty and without braces".into(),
        ));
    }
    if settings.url.starts_with("rediss://") {
        return Err(Unavailable(
            "TLS to Redis (rediss://) is not supported yet: reach Redis over a private network"
                .into(),
        ));
    }
    let client = redis::Client::open(settings.url.as_str())
        .map_err(|e| Unavailable(format!("invalid Redis URL ({:?})", e.kind())))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout))
        .set_number_of_retries(1);
    Ok(Pool::builder()
        .max_size(settings.pool_size.max(1))
        .connection_timeout(settings.timeout)
        // Connections reconnect by themselves; a ping before each use would double the cost.
        .test_on_check_out(false)
        .build_unchecked(Connector { client, config }))
}

/// Makes pooled connections: multiplexed, and reconnecting by themselves after Redis returns.
pub(crate) struct Connector {
    client: redis::Client,
    config: ConnectionManagerConfig,
}

impl bb8::ManageConnection for Connector {
    type Connection = ConnectionManager;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        ConnectionManager::new_with_config(self.client.clone(), self.config.clone()).await
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query_async(conn).await
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

/// Redis errors never carry the URL (which may hold a password) into messages.
pub(crate) fn unavailable<E: std::fmt::Display>(e: E) -> Unavailable {
    Unavailable(format!("Redis: {e}"))
}
