//! The gRPC check service (`portcullis.limiter.v1.CheckService`) over an engine. Bad input is
//! an `INVALID_ARGUMENT` status and changes nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_proto::limiter::v1 as pb;
use tonic::{Request, Response, Status};

use crate::engine::{CheckRequest, MemoryEngine};
use crate::policy::{MAX_COUNT, Policy};

/// Serves checks against a fixed set of policies.
pub struct CheckService {
    engine: Arc<MemoryEngine>,
    policies: HashMap<String, Policy>,
}

impl CheckService {
    /// A service over `engine` for `policies` (each validated).
    pub fn new(
        engine: Arc<MemoryEngine>,
        policies: Vec<Policy>,
    ) -> Result<Self, crate::policy::PolicyError> {
        for p in &policies {
            p.validate()?;
        }
        Ok(Self {
            engine,
            policies: policies.into_iter().map(|p| (p.name.clone(), p)).collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::check_service_server::CheckService for CheckService {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let req = request.into_inner();
        if req.hits == 0 || req.hits > MAX_COUNT {
            return Err(Status::invalid_argument(format!(
                "hits must be between 1 and {MAX_COUNT}"
            )));
        }
        let principal = req
            .principal
            .ok_or_else(|| Status::invalid_argument("principal is required"))?;
        let product = req
            .product
            .ok_or_else(|| Status::invalid_argument("product is required"))?;
        if principal.client.is_empty() || product.collection.is_empty() {
            return Err(Status::invalid_argument(
                "principal.client and product.collection are required",
            ));
        }
        let source_ip = match req.source_ip.as_str() {
            "" => None,
            text => Some(text.parse::<IpAddr>().map_err(|_| {
                Status::invalid_argument(format!("source_ip '{text}' is not an address"))
            })?),
        };
        let policies = req
            .policies
            .iter()
            .map(|name| {
                self.policies
                    .get(name)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown policy '{name}'")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let check = CheckRequest {
            client: &principal.client,
            profile: &principal.profile,
            collection: &product.collection,
            operation: &product.operation,
            source_ip,
            hits: req.hits,
        };
        let decision = self
            .engine
            .check(&policies, &check, time::OffsetDateTime::now_utc());
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(Response::new(pb::CheckResponse {
            allowed: decision.allowed,
            limits: decision
                .limits
                .into_iter()
                .map(|l| pb::LimitStatus {
                    policy: l.policy,
                    limit: l.limit,
                    allowed: l.allowed,
                    remaining: l.remaining,
                    reset_ms: millis(l.reset),
                    retry_after_ms: l.retry_after.map_or(0, millis),
                    quota: l.is_quota,
                })
                .collect(),
        }))
    }
}
