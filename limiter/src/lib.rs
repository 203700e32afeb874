//! The Portcullis limiter: decides whether a request is within the rates and quotas of its
//! principal (client, profile) and product (collection, operation).
//!
//! This crate holds the policy model, the in-memory engine and the gRPC check service over it.
//! The Redis backend, the quota-management service and the `portcullis-limiter` binary are
//! still to come.

pub mod engine;
pub mod grpc;
pub mod policy;
