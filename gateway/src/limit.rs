//! Limits: after authorization and before anything is sent upstream, the limiter decides
//! whether the caller (and the product) is within its quota policies — the profile's and the
//! collection's. In the embedded default the limiter's engine runs in this process; in a
//! cluster the gateway asks limiter nodes over gRPC, with a deadline, spreading checks over
//! them and failing over. When no limiter answers, each policy's failure mode decides: fail
//! closed (503 `platform_degraded`) or count on this node (`local_limit`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::header::{HeaderName, RETRY_AFTER};
use portcullis_limiter::counters::{Counters, MemoryCounters};
use portcullis_limiter::engine::{CheckError, Decision, Engine, Subject};
use portcullis_limiter::grpc::{policy_from_pb, status_from_pb};
use portcullis_limiter::policy::{Catalog, FailureMode};
use portcullis_proto::limiter::v1 as pb;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use crate::auth::Caller;
use crate::error::{ErrorCode, GatewayError};
use crate::snapshot::{CompiledCollection, CompiledOperation};

/// The gateway's side of limiting.
pub struct Limits {
    limiter: Limiter,
    /// Per-node counters for `local_limit` policies while no limiter answers, over the last
    /// catalogue the limiter sent.
    fallback: Engine,
    /// Requests decided by the fallback counters (for metrics and the node's status).
    pub fallbacks: AtomicU64,
    last_warning: AtomicI64,
}

enum Limiter {
    /// The engine in this process (the embedded default).
    InProcess(Arc<Engine>),
    /// Limiter nodes over gRPC.
    Remote(Remote),
}

/// A remote limiter's answer, or why there is none.
#[derive(Clone)]
enum Failure {
    /// The limiter does not know a policy: a configuration mistake, not an outage.
    UnknownPolicy(String),
    /// No limiter answered usably in time.
    Unavailable(String),
    /// The node does not have the method (a release before it): it counted nothing.
    Unimplemented(String),
}

impl Limits {
    /// Limits decided by `engine` in this process.
    pub fn in_process(engine: Arc<Engine>) -> Self {
        Self::with(Limiter::InProcess(engine))
    }

    /// Limits decided by the limiter nodes at `urls`, authenticating with `token`.
    pub fn remote(urls: &[String], token: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self::with(Limiter::Remote(Remote::new(
            urls, token, timeout,
        )?)))
    }

    fn with(limiter: Limiter) -> Self {
        Self {
            limiter,
            fallback: Engine::new(
                Catalog::default(),
                Counters::Memory(MemoryCounters::new(100_000)),
            ),
            fallbacks: AtomicU64::new(0),
            last_warning: AtomicI64::new(0),
        }
    }

    /// Checks one request: the decision, when there was one (no policy applies, or the platform
    /// could not decide: none), and the refusal to answer, if any — 429 for the caller's
    /// limits, 503 when the platform cannot decide.
    pub async fn check(
        &self,
        caller: &Caller<'_>,
        collection: &CompiledCollection,
        operation: &CompiledOperation,
        source: IpAddr,
    ) -> (Option<Decision>, Option<GatewayError>) {
        match self.decide(caller, collection, operation, source).await {
            Ok(None) => (None, None),
            Ok(Some(decision)) if decision.allowed => (Some(decision), None),
            Ok(Some(decision)) => {
                let refusal = refusal(&decision);
                (Some(decision), Some(refusal))
            }
            Err(e) => (None, Some(e)),
        }
    }

    async fn decide(
        &self,
        caller: &Caller<'_>,
        collection: &CompiledCollection,
        operation: &CompiledOperation,
        source: IpAddr,
    ) -> Result<Option<Decision>, GatewayError> {
        let mut policies: Vec<&str> = Vec::with_capacity(2);
        for name in [&caller.profile.quota_policy, &collection.quota_policy]
            .into_iter()
            .flatten()
        {
            if !policies.contains(&name.as_str()) {
                policies.push(name);
            }
        }
        if policies.is_empty() {
            return Ok(None);
        }
        let subject = Subject {
            client: caller.client.id.as_str(),
            profile: caller.profile.id.as_str(),
            collection: collection.id.as_str(),
            operation: operation.id.as_str(),
            source_ip: Some(source),
        };
        let now = OffsetDateTime::now_utc();
        let decision = match &self.limiter {
            Limiter::InProcess(engine) => match engine.check(&policies, &subject, 1, now).await {
                Ok(decision) => decision,
                Err(CheckError::UnknownPolicy(name)) => return Err(unknown_policy(&name)),
                Err(e @ (CheckError::UnknownLimit { .. } | CheckError::Unavailable(_))) => {
                    self.fail_over(&policies, &subject, now, e.to_string())
                        .await?
                }
            },
            Limiter::Remote(remote) => match remote.check(&policies, caller, &subject).await {
                Ok(decision) => decision,
                Err(Failure::UnknownPolicy(reason)) => return Err(unknown_policy(&reason)),
                Err(Failure::Unavailable(reason) | Failure::Unimplemented(reason)) => {
                    self.fail_over(&policies, &subject, now, reason).await?
                }
            },
        };
        Ok(Some(decision))
    }

    /// No limiter answered: every policy that applies must allow counting on this node, or
    /// the request is refused as `platform_degraded`.
    async fn fail_over(
        &self,
        policies: &[&str],
        subject: &Subject<'_>,
        now: OffsetDateTime,
        reason: String,
    ) -> Result<Decision, GatewayError> {
        let catalog = self.fallback.catalog();
        let local = policies.iter().all(|name| {
            catalog
                .policies
                .get(*name)
                .is_some_and(|p| p.on_unavailable == FailureMode::LocalLimit)
        });
        self.warn(&reason, local);
        if !local {
            return Err(GatewayError::new(
                ErrorCode::PlatformDegraded,
                "the limiter cannot be reached; try again later",
            ));
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.fallback
            .check(policies, subject, 1, now)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "the local fallback limit failed");
                GatewayError::new(
                    ErrorCode::PlatformDegraded,
                    "the limiter cannot be reached; try again later",
                )
            })
    }

    /// Logs the outage at most once every ten seconds.
    fn warn(&self, reason: &str, local: bool) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now - last >= 10
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mode = if local {
                "counting on this node"
            } else {
                "failing closed"
            };
            tracing::warn!(%reason, mode, "limiter unavailable");
        }
    }

    /// Keeps the fallback's copy of the policies current (remote limiters only), every
    /// `interval`, until the task is dropped.
    pub async fn follow_policies(&self, interval: Duration) {
        let Limiter::Remote(remote) = &self.limiter else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match remote.policies().await {
                Ok(catalog) => self.fallback.install(catalog),
                Err(reason) => tracing::debug!(%reason, "cannot refresh the limiter's policies"),
            }
        }
    }
}

fn unknown_policy(reason: &str) -> GatewayError {
    tracing::error!(%reason, "unknown quota policy: the configuration names a policy the limiter does not have");
    GatewayError::new(
        ErrorCode::PlatformDegraded,
        "a quota policy for this request is not defined; the operator has been told",
    )
}

/// The 429 for a refused decision: `quota_exhausted` if a calendar quota refused, else
/// `rate_limited`; `Retry-After` when the longest refusal ends.
fn refusal(decision: &Decision) -> GatewayError {
    let refused: Vec<_> = decision.limits.iter().filter(|l| !l.allowed).collect();
    let quota = refused.iter().find(|l| l.is_quota);
    let (code, message) = match (quota, refused.first()) {
        (Some(l), _) => (
            ErrorCode::QuotaExhausted,
            format!(
                "quota {}/{} is spent until its window ends",
                l.policy, l.limit
            ),
        ),
        (None, Some(l)) => (
            ErrorCode::RateLimited,
            format!("rate limit {}/{} exceeded", l.policy, l.limit),
        ),
        (None, None) => (ErrorCode::RateLimited, "rate limit exceeded".to_owned()),
    };
    let retry = refused
        .iter()
        .filter_map(|l| l.retry_after)
        .max()
        .unwrap_or(Duration::from_secs(1));
    let mut error = GatewayError::new(code, message)
        .with_header(RETRY_AFTER, HeaderValue::from(ceil_secs(retry).max(1)));
    for (name, value) in headers(decision) {
        error = error.with_header(name, value);
    }
    error
}

/// The limits of a decision as the request record keeps them.
pub fn uses(decision: &Decision) -> Vec<crate::audit::LimitUse> {
    decision
        .limits
        .iter()
        .map(|l| crate::audit::LimitUse {
            policy: l.policy.clone(),
            limit: l.limit.clone(),
            allowed: l.allowed,
            remaining: l.remaining,
        })
        .collect()
}

/// `RateLimit-Policy` and `RateLimit` (IETF draft-ietf-httpapi-ratelimit-headers): each limit
/// as `"<policy>/<limit>"`, with its quota and window, and its remaining hits and reset time.
pub fn headers(decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    let mut policy = String::new();
    let mut current = String::new();
    for (i, l) in decision.limits.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        policy.push_str(&format!(
            "{sep}\"{}/{}\";q={};w={}",
            l.policy,
            l.limit,
            l.quota,
            l.window.as_secs().max(1)
        ));
        current.push_str(&format!(
            "{sep}\"{}/{}\";r={};t={}",
            l.policy,
            l.limit,
            l.remaining,
            ceil_secs(l.reset)
        ));
    }
    [("ratelimit-policy", policy), ("ratelimit", current)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        // Names are plain ASCII (the limiter refuses others), so these are valid values.
        .filter_map(|(k, v)| Some((HeaderName::from_static(k), HeaderValue::from_str(&v).ok()?)))
        .collect()
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Limiter nodes over gRPC. Checks of concurrent requests travel together: a queue feeds a
/// task that sends whatever has gathered as one `CheckBatch` call, with up to
/// [`BATCHES_IN_FLIGHT`] calls outstanding. A quiet gateway sends each check at once (a batch
/// of one); a busy one makes one call, and the limiter one Redis round trip, for many checks.
struct Remote {
    queue: mpsc::Sender<Queued>,
    nodes: Arc<Nodes>,
}

/// A check waiting for its batch, and where its answer goes.
struct Queued {
    check: pb::CheckRequest,
    /// When the caller stops waiting: a check still queued then is not sent.
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<pb::CheckResponse, Failure>>,
}

/// Checks in one call, at most (the limiter takes up to 1,000).
const MAX_BATCH: usize = 256;
/// Calls outstanding at once; further checks wait for the next batch.
const BATCHES_IN_FLIGHT: usize = 4;
/// Checks waiting at most; beyond this a check fails at once as unavailable.
const MAX_QUEUED: usize = 16_384;

/// The limiter nodes: one HTTP/2 connection per node; calls go round-robin; a node that failed
/// is left out for a second (unless all have). One deadline covers a call's attempts. A node
/// that cannot be connected to (down, restarting) passes the call to the next; any other
/// failure — no answer in time, a connection lost mid-call, the node's own Redis trouble —
/// ends the call's checks with their policies' failure mode, because the node may already have
/// counted them and another would count them again.
struct Nodes {
    nodes: Vec<Node>,
    next: AtomicUsize,
    token: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    timeout: Duration,
    /// Unix milliseconds until which checks go one call each: a node of a release before
    /// `CheckBatch` answered one (limiters upgraded after their gateways).
    unbatched_until: AtomicI64,
}

struct Node {
    url: String,
    client: pb::check_service_client::CheckServiceClient<Channel>,
    /// Unix milliseconds until which this node is skipped.
    down_until: AtomicI64,
}

impl Node {
    /// Leaves the node out of the rotation for a while.
    fn mark_down(&self) {
        let until = now_ms() + i64::try_from(SKIP_FAILED.as_millis()).unwrap_or(i64::MAX);
        self.down_until.store(until, Ordering::Relaxed);
    }
}

/// How long a node that failed is left out.
const SKIP_FAILED: Duration = Duration::from_secs(1);
/// How long checks go one call each after a node did not know `CheckBatch`.
const UNBATCHED: Duration = Duration::from_secs(60);

impl Remote {
    /// The limiter nodes at `urls`, and the task that sends their batches (on the current
    /// runtime, until every `Remote` handle is dropped).
    fn new(urls: &[String], token: &str, timeout: Duration) -> anyhow::Result<Self> {
        let nodes = Arc::new(Nodes::new(urls, token, timeout)?);
        let (queue, receiver) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(send_batches(nodes.clone(), receiver));
        Ok(Self { queue, nodes })
    }

    async fn check(
        &self,
        policies: &[&str],
        caller: &Caller<'_>,
        subject: &Subject<'_>,
    ) -> Result<Decision, Failure> {
        // The limiter's span for this check continues the request's trace.
        let mut trace_context = std::collections::HashMap::new();
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            portcullis_limiter::telemetry::inject_map(
                &tracing::Span::current().context(),
                &mut trace_context,
            );
        }
        let check = pb::CheckRequest {
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            principal: Some(pb::Principal {
                client: subject.client.to_owned(),
                profile: subject.profile.to_owned(),
                environment: caller.profile.environment.as_str().to_owned(),
                partner: caller.client.partner.clone(),
            }),
            product: Some(pb::Product {
                collection: subject.collection.to_owned(),
                operation: subject.operation.to_owned(),
            }),
            source_ip: subject
                .source_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            hits: 1,
            trace_context,
        };
        let (reply, answer) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.nodes.timeout;
        let queued = Queued {
            check,
            deadline,
            reply,
        };
        match self.queue.try_send(queued) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(Failure::Unavailable(
                    "too many limiter checks waiting on this node".into(),
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(Failure::Unavailable(
                    "the limiter client has stopped".into(),
                ));
            }
        }
        // The check's own deadline, however long it waited for its batch.
        let response = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer?,
            Ok(Err(_)) => {
                return Err(Failure::Unavailable("the limiter batch was dropped".into()));
            }
            Err(_) => {
                return Err(Failure::Unavailable(format!(
                    "no limiter answer within {:?}",
                    self.nodes.timeout
                )));
            }
        };
        Ok(Decision {
            allowed: response.allowed,
            limits: response.limits.into_iter().map(status_from_pb).collect(),
        })
    }

    async fn policies(&self) -> Result<Catalog, String> {
        self.nodes.policies().await
    }
}

/// Sends what has gathered in the queue as one call whenever fewer than
/// [`BATCHES_IN_FLIGHT`] calls are outstanding; ends when the queue closes.
async fn send_batches(nodes: Arc<Nodes>, mut queue: mpsc::Receiver<Queued>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let batch = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let nodes = nodes.clone();
        tokio::spawn(async move {
            nodes.check_batch(batch).await;
            drop(slot);
        });
    }
}

impl Nodes {
    fn new(urls: &[String], token: &str, timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "--limiter needs at least one address");
        if let Some(url) = urls.iter().find(|u| !u.starts_with("http://")) {
            anyhow::bail!(
                "limiter address {url}: give http://host:port (TLS to limiter nodes is not supported yet; keep them on a private network)"
            );
        }
        let nodes = urls
            .iter()
            .map(|url| {
                let channel = Endpoint::from_shared(url.clone())
                    .map_err(|e| anyhow::anyhow!("limiter address {url}: {e}"))?
                    .connect_timeout(timeout.max(Duration::from_millis(200)))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .connect_lazy();
                Ok(Node {
                    url: url.clone(),
                    client: pb::check_service_client::CheckServiceClient::new(channel),
                    down_until: AtomicI64::new(0),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let token = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("the limiter token is not a valid header value"))?;
        Ok(Self {
            nodes,
            next: AtomicUsize::new(0),
            token,
            timeout,
            unbatched_until: AtomicI64::new(0),
        })
    }

    /// The nodes to try, in order: round-robin over those that have not failed recently, or
    /// over all of them when every one has.
    fn order(&self) -> Vec<&Node> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let n = self.nodes.len();
        let all = (0..n).map(|i| &self.nodes[(start + i) % n]);
        let up: Vec<_> = all
            .clone()
            .filter(|node| node.down_until.load(Ordering::Relaxed) <= now)
            .collect();
        if up.is_empty() { all.collect() } else { up }
    }

    /// Sends `batch` as one call and hands each check its answer: its decision, its own
    /// error, or the call's failure.
    async fn check_batch(&self, batch: Vec<Queued>) {
        // Checks whose callers have stopped waiting (gone, or past their deadline while all
        // calls were busy) are not sent: they would be counted for nothing.
        let now = tokio::time::Instant::now();
        let (checks, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .filter(|q| !q.reply.is_closed() && q.deadline > now)
            .map(|q| (q.check, q.reply))
            .unzip();
        if checks.is_empty() {
            return;
        }
        // The call has the whole timeout: a check's wait in the queue is not the node's delay.
        let deadline = now + self.timeout;
        if self.unbatched_until.load(Ordering::Relaxed) > now_ms() {
            return self.check_each(checks, replies, deadline).await;
        }
        let n = checks.len();
        let batch = pb::CheckBatchRequest { checks };
        let outcome = self
            .call(
                |mut client, request| async move { client.check_batch(request).await },
                &batch,
                deadline,
            )
            .await
            .and_then(|response| {
                if response.results.len() == n {
                    Ok(response.results)
                } else {
                    Err(Failure::Unavailable(format!(
                        "the limiter answered {} checks of {n}",
                        response.results.len()
                    )))
                }
            });
        match outcome {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(answer(result));
                }
            }
            Err(Failure::Unimplemented(reason)) => {
                tracing::warn!(%reason, "a limiter node does not take CheckBatch (a release before it; upgrade limiters before gateways); sending checks one call each for {UNBATCHED:?}");
                let until = now_ms() + i64::try_from(UNBATCHED.as_millis()).unwrap_or(i64::MAX);
                self.unbatched_until.store(until, Ordering::Relaxed);
                self.check_each(batch.checks, replies, deadline).await;
            }
            Err(failure) => {
                for reply in replies {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }

    /// Sends each check as its own `Check` call, all at once, by `deadline`.
    async fn check_each(
        &self,
        checks: Vec<pb::CheckRequest>,
        replies: Vec<oneshot::Sender<Result<pb::CheckResponse, Failure>>>,
        deadline: tokio::time::Instant,
    ) {
        let calls = checks
            .into_iter()
            .zip(replies)
            .map(|(check, reply)| async move {
                let outcome = self
                    .call(
                        |mut client, request| async move { client.check(request).await },
                        &check,
                        deadline,
                    )
                    .await;
                let _ = reply.send(outcome);
            });
        futures_util::future::join_all(calls).await;
    }

    async fn policies(&self) -> Result<Catalog, String> {
        let response = self
            .call(
                |mut client, request| async move { client.get_policies(request).await },
                &pb::GetPoliciesRequest {},
                tokio::time::Instant::now() + self.timeout,
            )
            .await
            .map_err(|f| match f {
                Failure::UnknownPolicy(r) | Failure::Unavailable(r) | Failure::Unimplemented(r) => {
                    r
                }
            })?;
        let mut catalog = Catalog {
            version: response.version,
            ..Catalog::default()
        };
        for p in response.policies {
            let policy = policy_from_pb(p).map_err(|s| s.message().to_owned())?;
            catalog.policies.insert(policy.name.clone(), policy);
        }
        Ok(catalog)
    }

    /// Calls each node in turn until one answers (or refuses for a reason another node would
    /// give too), all attempts by `deadline`.
    async fn call<M, R, F, Fut>(
        &self,
        call: F,
        message: &M,
        deadline: tokio::time::Instant,
    ) -> Result<R, Failure>
    where
        M: Clone,
        F: Fn(pb::check_service_client::CheckServiceClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut last = String::new();
        for node in self.order() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let mut request = tonic::Request::new(message.clone());
            request.set_timeout(left);
            request
                .metadata_mut()
                .insert("authorization", self.token.clone());
            let outcome =
                tokio::time::timeout_at(deadline, call(node.client.clone(), request)).await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    node.down_until.store(0, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    node.mark_down();
                    return Err(Failure::Unavailable(format!(
                        "limiter {}: no answer in time",
                        node.url
                    )));
                }
            };
            match status.code() {
                tonic::Code::NotFound => {
                    return Err(Failure::UnknownPolicy(status.message().to_owned()));
                }
                // The node has no such method: it counted nothing, and is otherwise well.
                tonic::Code::Unimplemented => {
                    return Err(Failure::Unimplemented(format!(
                        "limiter {}: {}",
                        node.url,
                        status.message()
                    )));
                }
                // Another node would answer the same: no point trying it.
                tonic::Code::InvalidArgument
                | tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied => {
                    return Err(Failure::Unavailable(format!(
                        "limiter {} refused the check: {}",
                        node.url,
                        status.message()
                    )));
                }
                // The node could not be reached: the check never arrived, so the next node may
                // take it without counting it twice.
                _ if never_reached(&status) => {
                    node.mark_down();
                    last = format!("limiter {}: {}", node.url, status.message());
                    tracing::debug!(reason = %last, "limiter unreachable; trying the next node");
                }
                // Anything else may have happened after the node counted the check: asking
                // another node could count it twice. The policy's failure mode decides.
                tonic::Code::Ok
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
                | tonic::Code::DeadlineExceeded
                | tonic::Code::AlreadyExists
                | tonic::Code::ResourceExhausted
                | tonic::Code::FailedPrecondition
                | tonic::Code::Aborted
                | tonic::Code::OutOfRange
                | tonic::Code::Internal
                | tonic::Code::Unavailable
                | tonic::Code::DataLoss => {
                    if status.code() != tonic::Code::Unavailable {
                        node.mark_down();
                    }
                    return Err(Failure::Unavailable(format!(
                        "limiter {}: {}",
                        node.url,
                        status.message()
                    )));
                }
            }
        }
        if last.is_empty() {
            last = "no limiter answered in time".into();
        }
        Err(Failure::Unavailable(last))
    }
}

/// One check's answer from its place in a batch's response.
fn answer(result: pb::CheckResult) -> Result<pb::CheckResponse, Failure> {
    match result.result {
        Some(pb::check_result::Result::Decision(decision)) => Ok(decision),
        Some(pb::check_result::Result::Error(e)) if e.code == tonic::Code::NotFound as i32 => {
            Err(Failure::UnknownPolicy(e.message))
        }
        Some(pb::check_result::Result::Error(e)) => Err(Failure::Unavailable(format!(
            "the limiter could not decide: {}",
            e.message
        ))),
        None => Err(Failure::Unavailable(
            "the limiter answered a check with nothing".into(),
        )),
    }
}

/// Whether a failed call never reached the node (no connection could be made), as opposed to
/// failing after the node may have acted on it.
fn never_reached(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        if e.to_string().contains("tcp connect error") {
            return true;
        }
        source = e.source();
    }
    status.message().contains("tcp connect error")
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
