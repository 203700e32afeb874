//! The request pipeline: the one ordered path every data-plane request takes. Each stage either
//! continues or refuses with a code from the error catalogue. REST requests enter through
//! [`handle`]; an MCP `tools/call` ([`crate::mcp`]) builds the operation's request and runs the
//! same stages from authorization on ([`Call::run`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, HeaderName, HeaderValue};
use time::OffsetDateTime;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::auth::{self, Caller, Verifiers, mtls};
use crate::authz;
use crate::snapshot::{CompiledCollection, CompiledOperation, Snapshot};
use crate::upstream_auth::{SharedSigner, TokenCache};
use http::{Request, Response};

use crate::body::{self, Body, BoxError};
use crate::error::{ErrorCode, GatewayError};
use crate::forward::{Forwarder, Outbound, Peer, X_REQUEST_ID};
use crate::route::Lookup;
use crate::route::normalize::normalize;
use crate::snapshot::SnapshotCell;

/// Limits the pipeline applies to every request.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    pub max_body_bytes: usize,
    /// Limit on the request line and headers together.
    pub max_header_bytes: usize,
    /// A header in which a trusted proxy that terminated TLS passes the caller's client
    /// certificate (URL-encoded PEM). Read only from trusted proxies; off by default.
    pub client_cert_header: Option<HeaderName>,
}

/// The data plane's shared state.
pub struct Gateway {
    pub snapshot: SnapshotCell,
    pub forwarder: Forwarder,
    pub verifiers: Verifiers,
    /// The gateway's own OAuth2 tokens for upstreams.
    pub upstream_tokens: TokenCache,
    /// Signs identity assertions for upstreams that ask for them.
    pub signer: SharedSigner,
    /// Rates and quotas: the limiter, in this process or remote.
    pub limits: crate::limit::Limits,
    /// One record per request.
    pub audit: crate::audit::Audit,
    pub settings: PipelineSettings,
    /// The Gateway MCP at `/mcp`.
    pub mcp: crate::mcp::Mcp,
}

impl Gateway {
    /// Keeps the copy of the limiter's policies (for failure modes) current; see
    /// [`crate::limit::Limits::follow_policies`].
    pub async fn follow_limiter_policies(self: Arc<Self>, interval: std::time::Duration) {
        // The task owns the gateway, so the limits live as long as it runs.
        let limits: &crate::limit::Limits = &self.limits;
        limits.follow_policies(interval).await
    }
}

/// Runs one request through the pipeline and returns the response to send. Never fails: a
/// refusal is a response with the catalogue's status and body. The response always carries
/// `X-Request-ID`.
pub async fn handle<B>(gw: &Gateway, peer: Peer, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let request_id = request_id(&req);
    let method = req.method().clone();
    let raw_path = req.uri().path().to_owned();
    let client_addr = peer.addr;
    let mut draft = gw.audit.draft(
        request_id.to_str().unwrap_or_default(),
        method.as_str(),
        &raw_path,
        client_addr.ip(),
    );
    draft.record.who.user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect());
    // A span per request, continuing the caller's trace (W3C `traceparent`) when it sent one.
    let span = tracing::info_span!(
        "request",
        otel.name = %method,
        otel.kind = "server",
        http.request.method = %method,
        url.path = %raw_path,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        portcullis.request_id = request_id.to_str().unwrap_or_default(),
        portcullis.reason = tracing::field::Empty,
    );
    let parent = portcullis_limiter::telemetry::extract(req.headers());
    let _ = span.set_parent(parent);
    // Read before the span starts: its name is settled only once the request is routed.
    let inbound_trace = inbound_trace_id(req.headers());
    // A record emitted early (the client left) carries at least the caller's trace.
    draft.record.trace_id = inbound_trace.clone();
    let outcome = if raw_path == crate::mcp::PATH
        || raw_path == crate::mcp::METADATA_ROOT
        || raw_path == crate::mcp::METADATA_PATH
    {
        draft.record.channel = "mcp".to_owned();
        let req = req.map(|b| body::limit_inbound(b, gw.settings.max_body_bytes));
        crate::mcp::serve(gw, peer, &request_id, req, &mut draft)
            .instrument(span.clone())
            .await
    } else {
        run(gw, peer, &request_id, req, &mut draft)
            .instrument(span.clone())
            .await
    };
    let (mut response, code) = match outcome {
        // A tool call is answered 200 whatever the operation's outcome, which it records.
        Ok(response) => (response, draft.refusal.take()),
        Err(e) => {
            let code = e.code;
            (
                e.into_response(request_id.to_str().unwrap_or_default()),
                Some(code),
            )
        }
    };
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    span.record("http.response.status_code", response.status().as_u16());
    draft.record.trace_id = trace_id(&span).or(inbound_trace);
    if let Some(code) = code {
        span.record("portcullis.reason", code.as_str());
    }
    tracing::info!(
        target: "portcullis::access",
        request_id = request_id.to_str().unwrap_or_default(),
        %method,
        path = %raw_path,
        status = response.status().as_u16(),
        code = code.map(ErrorCode::as_str),
        client = %client_addr,
        elapsed_us = started.elapsed().as_micros() as u64,
    );
    // A tool call's record carries the operation's own status (the HTTP answer is the
    // JSON-RPC envelope's 200).
    let status = draft.status.take().unwrap_or(response.status().as_u16());
    gw.audit.finish(draft, code, status, response)
}

/// The stages, in order. The order is the design: nothing is read from the body or sent
/// upstream before the request is known to be well-formed, routed, authenticated, authorized
/// and within its limits.
async fn run<B>(
    gw: &Gateway,
    peer: Peer,
    request_id: &HeaderValue,
    mut req: Request<B>,
    draft: &mut crate::audit::Draft,
) -> Result<Response<Body>, GatewayError>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    // One snapshot for the whole request, whatever changes meanwhile.
    let snapshot = gw.snapshot.current();

    // Behind trusted proxies the caller is the address they forwarded for.
    let source = gw.forwarder.source_address(req.headers(), &peer);
    draft.record.who.source_ip = source.to_string();

    // 1. Bound the request head before looking at it closely.
    check_head_size(&req, gw.settings.max_header_bytes)?;

    // 2. Canonical path: decode once, refuse traversal and encoding tricks.
    let path = normalize(req.uri().path())
        .map_err(|e| GatewayError::new(ErrorCode::BadRequest, e.to_string()))?;

    // 3. Route: collection by longest base path, operation by method and template.
    let route = match snapshot.router.lookup(req.method(), &path) {
        Lookup::Found(route) => route,
        Lookup::MethodNotAllowed { allow } => {
            let list = allow
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let e = GatewayError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed here; allowed: {list}", req.method()),
            );
            return Err(match HeaderValue::from_str(&list) {
                Ok(allow) => e.with_header(ALLOW, allow),
                Err(_) => e,
            });
        }
        Lookup::NotFound => return Err(route_not_found()),
    };
    let collection = &snapshot.collections[route.collection];
    let operation = &collection.operations[route.operation];
    describe(draft, collection, operation, req.method());
    let target_path = operation
        .target
        .expand(|name| route.param(name), route.rest());

    // 4. Authenticate: who is calling. Nothing about the caller is trusted before this.
    let caller = authenticate(gw, &snapshot, &peer, req.headers(), draft).await?;
    if let Some(name) = &gw.settings.client_cert_header {
        // A proxy's certificate header is for this gateway, never for the upstream.
        req.headers_mut().remove(name);
    }

    // 5–9.
    let call = Call {
        peer,
        source,
        request_id,
        caller: &caller,
        collection,
        operation,
        target_path,
    };
    let (parts, body) = req.into_parts();
    let body = body::limit_inbound(body, gw.settings.max_body_bytes);
    call.run(gw, parts, body, draft).await
}

/// Fills in the record's and the span's "what" once the operation is known.
pub(crate) fn describe(
    draft: &mut crate::audit::Draft,
    collection: &CompiledCollection,
    operation: &CompiledOperation,
    method: &http::Method,
) {
    let what = &mut draft.record.what;
    what.collection = Some(collection.id.to_string());
    what.collection_version = Some(collection.version.clone());
    what.operation = Some(operation.id.to_string());
    let template = format!("{}{}", collection.base_path, operation.template);
    {
        use opentelemetry::trace::TraceContextExt as _;
        let span = tracing::Span::current();
        span.record("http.route", template.as_str());
        // The span is named by its route once it is known (`GET /orders/{id}`).
        span.context()
            .span()
            .update_name(format!("{method} {template}"));
    }
    what.path_template = Some(template);
    if let Some(capture) = &operation.capture_body {
        draft.capture(capture);
    }
}

/// Stage 4, authentication, for every channel: the caller established from the request's
/// credential (a bearer token, else the client certificate), entered in the record.
pub(crate) async fn authenticate<'s>(
    gw: &Gateway,
    snapshot: &'s Snapshot,
    peer: &Peer,
    headers: &http::HeaderMap,
    draft: &mut crate::audit::Draft,
) -> Result<Caller<'s>, GatewayError> {
    let now = OffsetDateTime::now_utc();
    let certificate = client_certificate(gw, peer, headers);
    let presented = auth::Presented {
        headers,
        client_cert: certificate.as_deref(),
    };
    let caller = auth::authenticate(snapshot, &gw.verifiers, presented, now)
        .instrument(tracing::info_span!("authenticate"))
        .await?;
    let who = &mut draft.record.who;
    who.client = Some(caller.client.id.to_string());
    who.profile = Some(caller.profile.id.to_string());
    who.environment = Some(caller.profile.environment.to_string());
    who.partner = Some(caller.client.partner.clone()).filter(|p| !p.is_empty());
    who.credential = Some(caller.credential.to_string());
    who.subject = caller.subject.clone();
    Ok(caller)
}

/// One authenticated call of one operation: what stages 5 to 9 need. REST builds it from the
/// routed request; an MCP `tools/call` from the tool's operation and its arguments.
pub(crate) struct Call<'a, 's> {
    pub peer: Peer,
    /// The caller's address (behind trusted proxies, the one they forwarded for).
    pub source: IpAddr,
    pub request_id: &'a HeaderValue,
    pub caller: &'a Caller<'s>,
    pub collection: &'a CompiledCollection,
    pub operation: &'a CompiledOperation,
    /// The path for the upstream, expanded and encoded.
    pub target_path: String,
}

impl Call<'_, '_> {
    /// Stages 5 to 9: authorize, choose the upstream, bound the body, limit, forward. `body`
    /// is already bounded by `--max-body-bytes`.
    pub(crate) async fn run(
        self,
        gw: &Gateway,
        parts: http::request::Parts,
        body: Body,
        draft: &mut crate::audit::Draft,
    ) -> Result<Response<Body>, GatewayError> {
        let Call {
            peer,
            source,
            request_id,
            caller,
            collection,
            operation,
            target_path,
        } = self;
        let now = OffsetDateTime::now_utc();

        // 5. Authorize: may this caller call this operation, from here, now.
        authz::authorize(caller, collection, operation, source, now)?;

        // 6. The caller's environment chooses the upstream (authorization checked it is
        //    offered).
        let target = collection
            .upstreams
            .get(&caller.profile.environment)
            .ok_or_else(route_not_found)?;
        let upstream_headers = collection.headers.as_ref().map_err(|reason| {
            tracing::error!(collection = %collection.id, %reason, "collection cannot be forwarded");
            GatewayError::new(
                ErrorCode::UpstreamMisconfigured,
                "the upstream for this operation is misconfigured on this gateway",
            )
        })?;

        // 7. Refuse a declared body over the limit before reading any of it; an undeclared one
        //    is cut off as it streams.
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > gw.settings.max_body_bytes as u64) {
            return Err(GatewayError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the request body exceeds {} bytes",
                    gw.settings.max_body_bytes
                ),
            ));
        }

        // 8. Limit: the profile's and the collection's quota policies, all or nothing, counted
        //    only for a request the gateway would otherwise send. A refused request is charged
        //    nothing.
        if !gw.audit.accepting() {
            return Err(GatewayError::new(
                ErrorCode::AuditUnavailable,
                "request records cannot be kept right now; try again later",
            ));
        }
        let asked = Instant::now();
        let (limits, refusal) = gw
            .limits
            .check(caller, collection, operation, source)
            .instrument(tracing::info_span!("limiter.check", otel.kind = "client"))
            .await;
        draft.limiter = asked.elapsed();
        if let Some(decision) = &limits {
            draft.record.limits = crate::limit::uses(decision);
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }

        // 9. Forward, with the caller's identity (never its credential).
        let mut identity = gateway_headers(gw, caller, collection, request_id).await?;
        // The upstream call is a span of its own; the upstream continues the trace from it.
        let upstream_span = tracing::info_span!(
            "upstream",
            otel.kind = "client",
            http.response.status_code = tracing::field::Empty,
        );
        let mut trace_headers = http::HeaderMap::new();
        portcullis_limiter::telemetry::inject(&upstream_span.context(), &mut trace_headers);
        identity.extend(
            trace_headers
                .into_iter()
                .filter_map(|(name, value)| Some((name?, value))),
        );
        let out = Outbound {
            target,
            path: target_path,
            identity: &identity,
            headers: upstream_headers,
            timeout: collection.upstream_timeout,
            request_id,
            peer,
        };
        let body = draft.count_inbound(body);
        draft.upstream_started = Some(Instant::now());
        let mut response = gw
            .forwarder
            .send(out, parts, body)
            .instrument(upstream_span.clone())
            .await?;
        upstream_span.record("http.response.status_code", response.status().as_u16());
        draft.record.upstream_status = Some(response.status().as_u16());
        // The caller learns where it stands, on every admitted answer too.
        if let Some(decision) = &limits {
            for (name, value) in crate::limit::headers(decision) {
                response.headers_mut().insert(name, value);
            }
        }
        Ok(response)
    }
}

/// The certificate the caller presented: from its own TLS handshake, or — only when
/// `--client-cert-header` is set and the peer is a trusted proxy — from that header.
fn client_certificate(
    gw: &Gateway,
    peer: &Peer,
    headers: &http::HeaderMap,
) -> Option<Arc<mtls::ClientCert>> {
    if let Some(own) = &peer.client_cert {
        return Some(own.clone());
    }
    let name = gw.settings.client_cert_header.as_ref()?;
    if !gw.forwarder.is_trusted(peer.addr.ip()) {
        return None;
    }
    headers.get(name).and_then(mtls::from_forwarded_header)
}

/// Everything the gateway itself adds for the upstream: who called (plain headers, and a
/// signed assertion when the collection asks for one) and the gateway's own OAuth2 token.
async fn gateway_headers(
    gw: &Gateway,
    caller: &Caller<'_>,
    collection: &CompiledCollection,
    request_id: &HeaderValue,
) -> Result<Vec<(HeaderName, HeaderValue)>, GatewayError> {
    let mut headers = identity_headers(caller);
    if collection.identity_assertion {
        let audience = format!("{}/{}", collection.id, caller.profile.environment);
        let assertion = gw
            .signer
            .sign(caller, &audience, request_id.to_str().unwrap_or_default())
            .map_err(|reason| {
                tracing::error!(%reason, "cannot sign the identity assertion");
                GatewayError::new(
                    ErrorCode::UpstreamCredentialUnavailable,
                    "the gateway could not sign its identity assertion for the upstream",
                )
            })?;
        headers.push((HeaderName::from_static("x-portcullis-identity"), assertion));
    }
    if let Some(grant) = &collection.oauth2 {
        let authorization = gw.upstream_tokens.authorization(grant).await.map_err(|reason| {
            tracing::warn!(collection = %collection.id, %reason, "cannot obtain the upstream token");
            GatewayError::new(
                ErrorCode::UpstreamCredentialUnavailable,
                "the gateway could not obtain its credential for the upstream",
            )
        })?;
        headers.push((http::header::AUTHORIZATION, authorization));
    }
    Ok(headers)
}

/// What the upstream is told about the caller.
fn identity_headers(caller: &Caller<'_>) -> Vec<(HeaderName, HeaderValue)> {
    let profile = caller.profile;
    let scopes = caller.scopes.join(" ");
    [
        ("x-portcullis-client", caller.client.id.as_str()),
        ("x-portcullis-profile", profile.id.as_str()),
        ("x-portcullis-environment", profile.environment.as_str()),
        ("x-portcullis-partner", caller.client.partner.as_str()),
        ("x-portcullis-credential", caller.credential.as_str()),
        ("x-portcullis-scopes", scopes.as_str()),
        (
            "x-portcullis-subject",
            caller.subject.as_deref().unwrap_or_default(),
        ),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    // Non-ASCII values (a partner "Société") travel as UTF-8 bytes.
    .filter_map(|(k, v)| {
        Some((
            HeaderName::from_static(k),
            HeaderValue::from_bytes(v.as_bytes()).ok()?,
        ))
    })
    .collect()
}

/// The request's trace id when traces are exported.
fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| own.trace_id().to_string())
}

/// The trace id of the caller's `traceparent`, if it sent a well-formed one.
fn inbound_trace_id(headers: &http::HeaderMap) -> Option<String> {
    let parent = headers.get("traceparent")?.to_str().ok()?;
    let id = parent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
        .then(|| id.to_ascii_lowercase())
}

fn route_not_found() -> GatewayError {
    GatewayError::new(ErrorCode::RouteNotFound, "no route matches this request")
}

pub(crate) fn check_head_size<B>(req: &Request<B>, limit: usize) -> Result<(), GatewayError> {
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let line = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
    if line + headers > limit {
        return Err(GatewayError::new(
            ErrorCode::HeadersTooLarge,
            format!("the request line and headers exceed {limit} bytes"),
        ));
    }
    Ok(())
}

/// The caller's `X-Request-ID` if it is well-formed (1–128 visible characters from a safe set),
/// otherwise a new one.
fn request_id<B>(req: &Request<B>) -> HeaderValue {
    let inbound = req.headers().get(&X_REQUEST_ID).filter(|v| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    });
    match inbound {
        Some(v) => v.clone(),
        None => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .expect("a UUID is a valid header value"),
    }
}
