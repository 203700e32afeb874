//! A limiter node: serves the gRPC services over the engine, keeps its catalogue in step with
//! the store, and reports health (NOT_SERVING while its counters cannot be reached).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis_proto::limiter::v1 as pb;
use tokio::net::TcpListener;

use crate::auth::ServiceTokens;
use crate::counters::{Counters, MemoryCounters, RedisCounters, Unavailable};
use crate::definitions::Definitions;
use crate::manage::Quotas;
use crate::policy::{Policy, PolicyError};
use crate::redis_pool::RedisSettings;

/// Where a node keeps its state.
pub enum Backend {
    /// Counters in Redis, definitions in Redis: any number of nodes share them.
    Redis(RedisSettings),
    /// Counters in memory, definitions in a directory: one node.
    Local { data_dir: PathBuf, max_keys: usize },
}

impl Backend {
    /// The counters and the definitions store for this backend.
    pub fn open(&self) -> Result<(Counters, Definitions), Unavailable> {
        match self {
            Backend::Redis(settings) => Ok((
                Counters::Redis(RedisCounters::new(settings)?),
                Definitions::redis(settings)?,
            )),
            Backend::Local { data_dir, max_keys } => Ok((
                Counters::Memory(MemoryCounters::new(*max_keys)),
                Definitions::file(data_dir)?,
            )),
        }
    }
}

/// A seed file: policies created at start if they do not exist yet.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    policies: Vec<Policy>,
}

/// Reads and validates a seed file (YAML: `policies: [...]`).
pub fn read_seed(path: &Path) -> Result<Vec<Policy>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let seed: SeedFile =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut names = std::collections::HashSet::new();
    for policy in &seed.policies {
        policy
            .validate()
            .map_err(|e: PolicyError| format!("{}: {e}", path.display()))?;
        if !names.insert(policy.name.as_str()) {
            return Err(format!(
                "{}: policy {} is given twice",
                path.display(),
                policy.name
            ));
        }
    }
    Ok(seed.policies)
}

/// The names gRPC health reports on: the server as a whole and each service.
const SERVICES: [&str; 3] = [
    "",
    <pb::check_service_server::CheckServiceServer<crate::grpc::CheckService> as tonic::server::NamedService>::NAME,
    <pb::quota_service_server::QuotaServiceServer<crate::grpc::QuotaService> as tonic::server::NamedService>::NAME,
];

/// Keeps this node's catalogue in step with the store (other nodes' changes) and its health
/// with its counters' reachability, every `interval`, until the task is dropped.
pub async fn maintain(
    quotas: Arc<Quotas>,
    health: tonic_health::server::HealthReporter,
    interval: Duration,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reachable = match quotas.refresh().await {
            Ok(changed) => {
                crate::metrics::METRICS
                    .catalogue_version
                    .set(i64::try_from(quotas.engine.catalog().version).unwrap_or(i64::MAX));
                Ok(changed)
            }
            Err(e) => Err(e),
        };
        crate::metrics::METRICS
            .store_up
            .set(i64::from(reachable.is_ok()));
        let reachable = match reachable {
            Ok(changed) => {
                if changed {
                    tracing::info!(
                        version = quotas.engine.catalog().version,
                        "quota catalogue updated from the store"
                    );
                }
                true
            }
            Err(e) => {
                if serving {
                    tracing::warn!(error = %e, "the store is unreachable; checks will fail");
                }
                false
            }
        };
        if reachable != serving {
            serving = reachable;
            let status = if serving {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for name in SERVICES {
                health.set_service_status(name, status).await;
            }
            if serving {
                tracing::info!("the store is reachable again");
            }
        }
    }
}

/// Serves the limiter's gRPC API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    quotas: Arc<Quotas>,
    tokens: Arc<ServiceTokens>,
    poll: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let maintainer = tokio::spawn(maintain(quotas.clone(), health, poll));
    let routes = crate::grpc::routes(quotas, tokens, health_service);
    let result = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // Checks are small messages: without TCP_NODELAY, delayed ACKs add tens of ms.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    maintainer.abort();
    result
}

/// The address a node listens on by default.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
