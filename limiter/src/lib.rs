//! The Portcullis limiter: decides whether a request is within the rates and quotas of its
//! principal (client, profile) and product (collection, operation).
//!
//! This crate holds the policy model and the in-memory engine. The gRPC service and the Redis
//! backend (the `portcullis-limiter` binary) are built on them.

pub mod engine;
pub mod policy;
