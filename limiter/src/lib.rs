//! The Portcullis limiter: decides whether a request is within the rates and quotas of its
//! principal (client, profile) and product (collection, operation).
//!
//! - [`policy`]: policies, limits, overrides and the catalogue holding them.
//! - [`engine`]: one check against every applicable limit, all or nothing.
//! - [`counters`]: where hits are counted (memory or Redis).
//! - [`definitions`] and [`manage`]: where the catalogue is stored, and changing it with a
//!   change record.
//! - [`grpc`] and [`auth`]: the check and quota-management services, behind service tokens.
//! - [`node`]: a limiter node (the `portcullis-limiter` binary).

pub mod auth;
pub mod counters;
pub mod definitions;
pub mod engine;
pub mod grpc;
pub mod manage;
pub mod metrics;
pub mod node;
pub mod policy;
mod redis_pool;
pub mod telemetry;

pub use redis_pool::RedisSettings;
