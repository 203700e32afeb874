//! Portcullis, an API gateway: one front door for apps and AI agents alike.
//!
//! A request's path through the code, in order: [`server`] accepts it, [`pipeline`] runs the
//! stages — [`route`] (with [`route::normalize`]), [`auth`], [`authz`], [`limit`], then
//! [`forward`] — against the current [`snapshot`], answering refusals from the [`error`]
//! catalogue. The configuration is read by
//! [`config`] into the [`model`], kept by the [`store`], changed by [`plan`] (from files, the CLI
//! or the [`manage`]ment API), and compiled into snapshots that a [`node`] follows. Agents reach
//! the same operations through the Gateway [`mcp`].

pub mod admin;
pub mod audit;
pub mod audit_cli;
pub mod auth;
pub mod authz;
pub mod body;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod forward;
pub mod limit;
pub mod manage;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod node;
pub mod openapi;
pub mod pipeline;
pub mod plan;
pub mod quota_cli;
pub mod remote_cli;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod upstream_auth;
