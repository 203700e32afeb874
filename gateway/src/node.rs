//! A gateway node: opens the store, compiles the first snapshot, starts the gateway and admin
//! listeners, follows configuration changes, and shuts down gracefully on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use portcullis_limiter::auth::{Role, ServiceTokens};
use portcullis_limiter::manage::Quotas;
use portcullis_limiter::node::{Backend, read_seed};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, Health};
use crate::auth::Verifiers;
use crate::auth::jwt::KeySets;
use crate::auth::token::TokenSecret;
use crate::demo;
use crate::forward::{ForwardSettings, Forwarder, client_tls};
use crate::limit::Limits;
use crate::model::Config;
use crate::pipeline::{self, Gateway, PipelineSettings};
use crate::plan::{self, ApplyOptions};
use crate::server::{self, ConnectionLimits};
use crate::snapshot::{Snapshot, SnapshotCell, TokenChange, TokenTable};
use crate::store::{Store, StoreLocation, assemble, assemble_owned, objects, patch};
use crate::upstream_auth::{IdentitySigner, TokenCache};

/// Settings of one node (command-line flags, each also readable from the environment).
#[derive(Clone, Debug, clap::Args)]
pub struct NodeSettings {
    /// Address of the gateway listener (API traffic).
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the admin listener (health, readiness). Keep it off public networks.
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub admin_listen: SocketAddr,
    /// PEM certificate chain for TLS on the gateway listener (with --tls-key).
    #[arg(long, env = "PORTCULLIS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the gateway listener.
    #[arg(long, env = "PORTCULLIS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "PORTCULLIS_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest request line plus headers accepted, in bytes.
    #[arg(long, env = "PORTCULLIS_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Time allowed to connect to an upstream.
    #[arg(long, env = "PORTCULLIS_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Time allowed for an upstream's response headers (a collection may override it).
    #[arg(long, env = "PORTCULLIS_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// Proxies in front of the gateway (comma-separated addresses or CIDR blocks) whose
    /// X-Forwarded-For/-Proto/-Host and Forwarded headers are trusted. From any other peer
    /// those headers are replaced.
    #[arg(long, env = "PORTCULLIS_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long an identity provider's fetched key set is used before it is fetched again.
    #[arg(long, env = "PORTCULLIS_JWKS_CACHE_TTL", default_value = "10m", value_parser = positive_duration)]
    pub jwks_cache_ttl: Duration,
    /// Least time between two key-set fetches for one provider (a token naming an unknown key
    /// triggers a fetch at most this often).
    #[arg(long, env = "PORTCULLIS_JWKS_REFRESH_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwks_refresh_cooldown: Duration,
    /// PKCS#8 PEM EC (P-256) private key for identity assertions sent to upstreams; every node
    /// of a cluster should share one. Defaults to DATA_DIR/identity-key.pem, created on first use.
    #[arg(long, env = "PORTCULLIS_IDENTITY_SIGNING_KEY")]
    pub identity_signing_key: Option<PathBuf>,
    /// The `iss` of identity assertions sent to upstreams.
    #[arg(long, env = "PORTCULLIS_IDENTITY_ISSUER", default_value = "portcullis")]
    pub identity_issuer: String,
    /// Header in which a TLS-terminating proxy in --trusted-proxies passes the caller's client
    /// certificate (URL-encoded PEM, e.g. nginx `$ssl_client_escaped_cert`). Off by default;
    /// never read from other peers.
    #[arg(long, env = "PORTCULLIS_CLIENT_CERT_HEADER")]
    pub client_cert_header: Option<http::HeaderName>,
    /// The audience (`aud`) client-signed assertions must name.
    #[arg(
        long,
        env = "PORTCULLIS_ASSERTION_AUDIENCE",
        default_value = "portcullis"
    )]
    pub assertion_audience: String,
    /// Extra PEM CA bundle trusted for https upstreams and identity providers.
    #[arg(long, env = "PORTCULLIS_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// How often the store is checked for a new configuration version.
    #[arg(long, env = "PORTCULLIS_CONFIG_POLL_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub config_poll_interval: Duration,
    /// On shutdown, time to keep serving while /readyz already reports not-ready, so load
    /// balancers stop sending traffic before the listener closes.
    #[arg(long, env = "PORTCULLIS_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
    /// Time in-flight requests get to finish on shutdown.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Limiter nodes, comma-separated gRPC URLs (e.g. `http://limiter-1:9090`). Without
    /// them, the limiter runs in this process, its counters in memory.
    #[arg(long, env = "PORTCULLIS_LIMITER", value_delimiter = ',')]
    pub limiter: Vec<String>,
    /// File holding the service token (role `check`) this node presents to the limiter nodes.
    #[arg(long, env = "PORTCULLIS_LIMITER_TOKEN_FILE", requires = "limiter")]
    pub limiter_token_file: Option<PathBuf>,
    /// Operators' identity provider: OIDC access tokens from this issuer identify operators
    /// of the management API (besides operator tokens).
    #[arg(
        long,
        env = "PORTCULLIS_OPERATOR_OIDC_ISSUER",
        requires = "operator_oidc_audience"
    )]
    pub operator_oidc_issuer: Option<String>,
    /// The `aud` operators' tokens must carry.
    #[arg(long, env = "PORTCULLIS_OPERATOR_OIDC_AUDIENCE")]
    pub operator_oidc_audience: Option<String>,
    /// The provider's key set URL, if discovery should be skipped.
    #[arg(long, env = "PORTCULLIS_OPERATOR_OIDC_JWKS_URI")]
    pub operator_oidc_jwks_uri: Option<String>,
    /// The claim of an operator's token listing its roles or groups.
    #[arg(long, env = "PORTCULLIS_OPERATOR_ROLES_CLAIM", default_value = "roles")]
    pub operator_roles_claim: String,
    /// Claim values mapped to roles, e.g. `platform-admins=admin,sre=editor`. Without it, a
    /// value naming a role (viewer, editor, admin, auditor) is that role.
    #[arg(long, env = "PORTCULLIS_OPERATOR_ROLE_MAP", value_delimiter = ',', value_parser = role_mapping)]
    pub operator_role_map: Vec<(String, crate::manage::Role)>,
    /// Browser origins (exact `scheme://host[:port]`, comma-separated) allowed to call the
    /// Management MCP; by default none (requests without `Origin` are not affected).
    #[arg(long, env = "PORTCULLIS_ADMIN_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub admin_allowed_origins: Vec<String>,
    /// File holding a `manage` service token of the limiter, with which the management API
    /// manages quota policies, overrides and usage. Defaults, with the in-process limiter, to
    /// DATA_DIR/limiter/admin.token.
    #[arg(long, env = "PORTCULLIS_LIMITER_MANAGE_TOKEN_FILE")]
    pub limiter_manage_token_file: Option<PathBuf>,
    /// Deadline of one limiter check; past it the next limiter node is tried, then each
    /// policy's failure mode applies.
    #[arg(long, env = "PORTCULLIS_LIMITER_TIMEOUT", default_value = "100ms", value_parser = positive_duration)]
    pub limiter_timeout: Duration,
    /// In-process limiter: address of its gRPC API (quota management: `portcullis quota`).
    #[arg(
        long,
        env = "PORTCULLIS_QUOTA_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub quota_listen: SocketAddr,
    /// In-process limiter: service tokens for its gRPC API (YAML, see `portcullis-limiter
    /// token`). Defaults to DATA_DIR/limiter/tokens.yaml, created on first start with one
    /// `manage` token whose secret is written to DATA_DIR/limiter/admin.token.
    #[arg(long, env = "PORTCULLIS_QUOTA_TOKENS")]
    pub quota_tokens: Option<PathBuf>,
    /// In-process limiter: quota policies created at start when they do not exist yet (YAML:
    /// `policies: [...]`).
    #[arg(long, env = "PORTCULLIS_QUOTA_SEED")]
    pub quota_seed: Option<PathBuf>,
    /// This node's name in request records (each node keeps its own hash chain). Defaults to
    /// a name made on first start and kept in DATA_DIR/node-id.
    #[arg(long, env = "PORTCULLIS_NODE_ID")]
    pub node_id: Option<String>,
    /// When request records cannot be written to the database: `spool` keeps serving and
    /// keeps them in the local journal until it can; `refuse` answers 503 audit_unavailable
    /// meanwhile (the compliance setting); `off` records nothing (for measurements only).
    #[arg(long, env = "PORTCULLIS_AUDIT_MODE", default_value = "spool")]
    pub audit_mode: crate::audit::AuditMode,
    /// Clients that get their own `client` and `profile` label values in the metrics (the
    /// first ones seen); requests of any other client are labelled `_other`.
    #[arg(long, env = "PORTCULLIS_METRICS_MAX_CLIENTS", default_value_t = 100)]
    pub metrics_max_clients: usize,
    #[command(flatten)]
    pub telemetry: portcullis_limiter::telemetry::TelemetrySettings,
    /// The gateway's public base URL (e.g. `https://api.example.com`): its MCP resource is
    /// `<public-url>/mcp`, the audience OIDC tokens used over MCP must carry. Defaults to the
    /// listener's own address.
    #[arg(long, env = "PORTCULLIS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Browser origins allowed to call `/mcp` (exact `scheme://host[:port]`, comma-separated);
    /// requests without `Origin` are always allowed. Defaults to the public URL's origin.
    #[arg(long, env = "PORTCULLIS_MCP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub mcp_allowed_origins: Vec<String>,
    /// How collections that do not choose are offered to agents: one tool per operation, or
    /// the discovery tools of the catalogue mode.
    #[arg(long, env = "PORTCULLIS_MCP_MODE", default_value = "tools")]
    pub mcp_mode: crate::model::McpMode,
    /// How long an MCP session (protocol versions before 2026-07-28) lasts after `initialize`.
    #[arg(long, env = "PORTCULLIS_MCP_SESSION_TTL", default_value = "24h", value_parser = positive_duration)]
    pub mcp_session_ttl: Duration,
    /// The bootstrap admin's operator token (`pco_…`), used only when the store has no
    /// operators yet; without it, one is generated and printed once.
    #[arg(long, env = "PORTCULLIS_BOOTSTRAP_ADMIN_TOKEN", hide_env_values = true)]
    pub bootstrap_admin_token: Option<String>,
    /// Start the built-in demo upstream and (re)apply the demo collection.
    #[arg(long)]
    pub demo: bool,
}

/// The origin (`scheme://host[:port]`) of a URL.
fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{authority}")
        }
        None => url.to_owned(),
    }
}

/// Runs a node until it is asked to stop.
pub async fn run(
    settings: NodeSettings,
    location: StoreLocation,
    secret: TokenSecret,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let signer = IdentitySigner::load(
        settings.identity_signing_key.as_deref(),
        data_dir,
        settings.identity_issuer.clone(),
    )
    .map_err(|e| anyhow::anyhow!("cannot load the identity signing key: {e}"))?;
    let store = Store::open(&location)
        .await
        .with_context(|| format!("cannot open the configuration store {}", location.display()))?;
    let (limits, embedded) = limits(&settings, data_dir).await?;
    let node_id = match &settings.node_id {
        Some(id) => id.clone(),
        None => node_id(data_dir)?,
    };
    let metrics = Arc::new(crate::metrics::Metrics::new(settings.metrics_max_clients));
    let audit = crate::audit::writer::start(
        store.clone(),
        data_dir,
        node_id,
        settings.audit_mode,
        metrics,
    )
    .await
    .context("cannot start the audit trail")?;

    // The demo gets a fresh token on every start: only its hash is stored, so an earlier
    // one cannot be shown again.
    let demo_token = if settings.demo {
        let upstream = demo::start_upstream()
            .await
            .context("cannot start the demo upstream")?;
        let token = crate::auth::token::generate();
        let (_, stored) = store.load().await?;
        let config =
            demo::config_replacing(upstream, &secret.hash_hex(&token), &assemble(&stored)?);
        plan::apply(&store, &config, ApplyOptions::default())
            .await
            .context("cannot apply the demo configuration")?;
        Some(token)
    } else {
        None
    };

    let (version, records) = store.load().await?;
    let config = assemble_owned(records)?;
    let snapshot = Snapshot::compile(version, &config)
        .context("the stored configuration cannot be compiled; refusing to serve it")?;
    let followed = Followed {
        version,
        config,
        tokens: Some(snapshot.tokens.clone()),
    };

    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_acceptor(cert, key)?),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => bail!("--tls-cert and --tls-key go together"),
    };
    let gateway_listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let admin_listener = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.admin_listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let gateway_url = format!("{scheme}://{}", gateway_listener.local_addr()?);
    let admin_url = format!("http://{}", admin_listener.local_addr()?);
    if let Some(url) = &settings.public_url {
        let parsed: http::Uri = url
            .parse()
            .with_context(|| format!("--public-url '{url}' is not a URL"))?;
        let origin_only = matches!(parsed.scheme_str(), Some("http" | "https"))
            && parsed.authority().is_some()
            && matches!(parsed.path(), "" | "/")
            && parsed.query().is_none();
        if !origin_only {
            bail!("--public-url '{url}' must be http(s)://host[:port], without a path");
        }
    } else if settings.listen.ip().is_unspecified() {
        tracing::warn!(
            listen = %settings.listen,
            "the gateway listens on all addresses but --public-url is not set: the MCP resource and allowed origin are {gateway_url}, which clients cannot use; set --public-url"
        );
    }
    // The management API; an empty store gets its first (admin) operator.
    let bootstrap_token = match crate::manage::bootstrap(
        &store,
        &secret,
        settings.bootstrap_admin_token.as_deref(),
        &audit,
    )
    .await
    .context("cannot create the bootstrap admin operator")?
    {
        crate::manage::Bootstrap::Created(shown) => shown,
        crate::manage::Bootstrap::Existing => None,
    };
    let mut extra_roots = Vec::new();
    if let Some(path) = &settings.upstream_ca_file {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        extra_roots = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read the upstream CA file {}", path.display()))?;
    }
    let operator_idp_roots = extra_roots.clone();
    // The in-process limiter's gRPC API (quota management) listens from here on.
    let quota_listener = match &embedded {
        Some(_) => Some(
            TcpListener::bind(settings.quota_listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.quota_listen))?,
        ),
        None => None,
    };
    let quota_url = match &quota_listener {
        Some(listener) => Some(format!("http://{}", listener.local_addr()?)),
        None => None,
    };
    let api = Arc::new(crate::manage::Api {
        store: store.clone(),
        secret: secret.clone(),
        audit: audit.clone(),
        quotas: quota_client(&settings, data_dir, quota_url.as_deref())?,
        sessions: crate::mcp::session::SessionKeys::for_management(&secret),
        session_ttl: settings.mcp_session_ttl,
        allowed_origins: settings.admin_allowed_origins.clone(),
        oidc: settings
            .operator_oidc_issuer
            .as_ref()
            .map(|issuer| crate::manage::OperatorOidc {
                provider: crate::snapshot::CompiledProvider {
                    id: crate::model::ProviderId("operators".into()),
                    issuer: issuer.clone(),
                    audiences: settings
                        .operator_oidc_audience
                        .clone()
                        .into_iter()
                        .collect(),
                    jwks_uri: settings.operator_oidc_jwks_uri.clone(),
                    clock_skew: Duration::from_secs(60),
                },
                keys: KeySets::new(
                    client_tls(&operator_idp_roots),
                    settings.jwks_cache_ttl,
                    settings.jwks_refresh_cooldown,
                    Duration::from_secs(5),
                ),
                roles_claim: settings.operator_roles_claim.clone(),
                role_map: settings.operator_role_map.clone(),
            }),
    });
    let mcp = crate::mcp::Mcp {
        settings: crate::mcp::McpSettings {
            resource: format!(
                "{}{}",
                settings
                    .public_url
                    .as_deref()
                    .unwrap_or(&gateway_url)
                    .trim_end_matches('/'),
                crate::mcp::PATH
            ),
            allowed_origins: if settings.mcp_allowed_origins.is_empty() {
                vec![origin(
                    settings.public_url.as_deref().unwrap_or(&gateway_url),
                )]
            } else {
                settings.mcp_allowed_origins.clone()
            },
            default_mode: settings.mcp_mode,
            session_ttl: settings.mcp_session_ttl,
            max_message_bytes: settings.max_body_bytes,
        },
        sessions: crate::mcp::session::SessionKeys::new(&secret),
    };

    let extra_roots_for_idp = extra_roots.clone();
    let gateway = Arc::new(Gateway {
        snapshot: SnapshotCell::new(snapshot),
        forwarder: Forwarder::new(&ForwardSettings {
            connect_timeout: settings.upstream_connect_timeout,
            response_timeout: settings.upstream_timeout,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 512,
            extra_roots,
            trusted_proxies: settings.trusted_proxies.clone(),
        }),
        verifiers: Verifiers {
            key_sets: KeySets::new(
                client_tls(&extra_roots_for_idp),
                settings.jwks_cache_ttl,
                settings.jwks_refresh_cooldown,
                Duration::from_secs(5),
            ),
            secret,
            assertion_audience: settings.assertion_audience.clone(),
        },
        upstream_tokens: TokenCache::new(client_tls(&extra_roots_for_idp)),
        signer: Arc::new(signer),
        limits,
        audit: audit.clone(),
        settings: PipelineSettings {
            max_body_bytes: settings.max_body_bytes,
            max_header_bytes: settings.max_header_bytes,
            client_cert_header: settings.client_cert_header.clone(),
        },
        mcp,
    });
    let health = Arc::new(Health::default());

    let limits = ConnectionLimits {
        max_head_bytes: settings.max_header_bytes.saturating_mul(2).max(64 * 1024),
        header_read_timeout: Duration::from_secs(30),
        tls_handshake_timeout: Duration::from_secs(10),
    };
    // The data plane (and the change follower) stop first; the admin listener last, so that
    // readiness stays observable while the node drains.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let gw = gateway.clone();
    let data_plane = tokio::spawn(server::serve(
        gateway_listener,
        tls,
        limits,
        move |peer, req| {
            let gw = gw.clone();
            async move { pipeline::handle(&gw, peer, req).await }
        },
        stop_rx.clone(),
        settings.shutdown_grace,
    ));
    let (gw, h, api) = (gateway.clone(), health.clone(), api.clone());
    let admin_plane = tokio::spawn(server::serve(
        admin_listener,
        None,
        limits,
        move |peer: crate::forward::Peer, req| {
            admin::handle(gw.clone(), h.clone(), api.clone(), peer.addr, req)
        },
        admin_stop_rx,
        Duration::from_secs(1),
    ));
    let policy_follower =
        tokio::spawn(Arc::clone(&gateway).follow_limiter_policies(Duration::from_secs(5)));
    let quota_api = match (embedded, quota_listener) {
        (Some(limiter), Some(listener)) => {
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(portcullis_limiter::node::serve(
                listener,
                limiter.quotas,
                limiter.tokens,
                Duration::from_secs(1),
                async move { crate::server::stopped(&mut stop).await },
            )))
        }
        (Some(_), None) | (None, _) => None,
    };
    // Woken by the store's change feed; the poll below is the safety net.
    let wake = Arc::new(tokio::sync::Notify::new());
    let feed = {
        let (store, wake) = (store.clone(), wake.clone());
        tokio::spawn(async move { store.watch_commits(wake).await })
    };
    let follower = tokio::spawn(follow_changes(
        wake,
        followed,
        store.clone(),
        gateway.clone(),
        health.clone(),
        settings.config_poll_interval,
        stop_rx,
    ));

    println!(
        "Portcullis {} is running (configuration version {version}, store {})",
        env!("CARGO_PKG_VERSION"),
        location.display()
    );
    println!("  gateway: {gateway_url}");
    if let Some(url) = &quota_url {
        println!("  quotas:  {url} (gRPC, in-process limiter)");
    }
    println!("  admin:   {admin_url}");
    match &bootstrap_token {
        Some(token) => println!(
            "  management API: {admin_url}/api/v1; bootstrap admin operator token (shown once):\n    {token}\n  Try it (the whole API: {admin_url}/api/v1/openapi.json; agents: MCP at {admin_url}/api/v1/mcp):\n    curl -s -H 'Authorization: Bearer {token}' {admin_url}/api/v1/collections"
        ),
        None => println!(
            "  management API: {admin_url}/api/v1 (operator tokens: `portcullis operator token`)"
        ),
    }
    if let Some(token) = &demo_token {
        print!(
            "{}",
            demo::banner(&gateway_url, &admin_url, quota_url.as_deref(), token)
        );
    }

    shutdown_signal().await;
    health.set_shutting_down();
    if !settings.drain_delay.is_zero() {
        tracing::info!(delay = ?settings.drain_delay, "shutting down: reporting not-ready while still serving");
        tokio::time::sleep(settings.drain_delay).await;
    }
    tracing::info!("shutting down: refusing new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    policy_follower.abort();
    feed.abort();
    for task in [data_plane, follower] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a task failed during shutdown");
        }
    }
    // Every request has finished: its record is emitted; write them all out.
    audit.flush(Duration::from_secs(10)).await;
    if let Some(task) = quota_api {
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the quota API failed"),
            Err(e) => tracing::error!(error = %e, "the quota API failed during shutdown"),
            Ok(Ok(())) => {}
        }
    }
    let _ = admin_stop_tx.send(true);
    if let Err(e) = admin_plane.await {
        tracing::error!(error = %e, "the admin listener failed during shutdown");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The node's name, made on first start and kept in DATA_DIR/node-id.
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let n: u32 = rand::random();
    let id = format!("node-{n:08x}");
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// The limiter running in this process, and who may call its gRPC API.
struct Embedded {
    quotas: Arc<Quotas>,
    tokens: Arc<ServiceTokens>,
}

/// The node's limits: remote limiter nodes when `--limiter` names some, else the limiter's
/// engine in this process (definitions in DATA_DIR/limiter), seeded from `--quota-seed` and,
/// with `--demo`, the demo policy.
async fn limits(
    settings: &NodeSettings,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Limits, Option<Embedded>)> {
    if !settings.limiter.is_empty() {
        if settings.demo {
            tracing::warn!(
                "--demo with --limiter: the limiter nodes must hold the demo policy (seed them with it), or demo requests are refused"
            );
        }
        let path = settings
            .limiter_token_file
            .as_ref()
            .context("--limiter needs --limiter-token-file (a `check` token of the limiter)")?;
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the limiter token {}", path.display()))?;
        let limits = Limits::remote(&settings.limiter, token.trim(), settings.limiter_timeout)?;
        return Ok((limits, None));
    }
    let dir = data_dir.join("limiter");
    let backend = Backend::Local {
        data_dir: dir.clone(),
        max_keys: 1_000_000,
    };
    let (counters, definitions) = backend.open()?;
    let quotas = Arc::new(
        Quotas::open(definitions, counters)
            .await
            .context("cannot load the quota definitions")?,
    );
    let mut seed = match &settings.quota_seed {
        Some(path) => read_seed(path).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    if settings.demo {
        seed.push(demo::policy());
    }
    let created = quotas.seed(seed).await?;
    if !created.is_empty() {
        tracing::info!(policies = ?created, "seeded quota policies");
    }
    let tokens_file = match &settings.quota_tokens {
        Some(path) => path.clone(),
        None => bootstrap_quota_token(&dir)?,
    };
    let tokens = ServiceTokens::load(&tokens_file).map_err(anyhow::Error::msg)?;
    let limits = Limits::in_process(quotas.engine.clone());
    Ok((
        limits,
        Some(Embedded {
            quotas,
            tokens: Arc::new(tokens),
        }),
    ))
}

/// DATA_DIR/limiter/tokens.yaml, created on first start with one `manage` token whose secret
/// goes to admin.token beside it (readable by this user only), for `portcullis quota`.
fn bootstrap_quota_token(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let tokens = dir.join("tokens.yaml");
    if tokens.exists() {
        return Ok(tokens);
    }
    let (secret, entry) = portcullis_limiter::auth::issue("local-admin", Role::Manage);
    let secret_path = dir.join(ADMIN_TOKEN_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&secret_path)
        .with_context(|| format!("cannot write {}", secret_path.display()))?;
    std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())?;
    portcullis_limiter::auth::write_file(&tokens, vec![entry])
        .with_context(|| format!("cannot write {}", tokens.display()))?;
    tracing::info!(token = %secret_path.display(), "created the quota API's admin token");
    Ok(tokens)
}

/// The management API's client of the limiter's quota service: the in-process limiter's own
/// gRPC API at `local`, or the first limiter node, with the `manage` token of
/// `--limiter-manage-token-file` (by default, in-process, DATA_DIR/limiter/admin.token).
/// None, with a warning, when there is no token: the quota endpoints then answer 503.
fn quota_client(
    settings: &NodeSettings,
    data_dir: &std::path::Path,
    local: Option<&str>,
) -> anyhow::Result<Option<crate::quota_cli::Client>> {
    let Some(url) = local.or(settings.limiter.first().map(String::as_str)) else {
        return Ok(None);
    };
    let (path, explicit) = match (&settings.limiter_manage_token_file, local) {
        (Some(path), _) => (path.clone(), true),
        (None, Some(_)) => (data_dir.join("limiter").join(ADMIN_TOKEN_FILE), false),
        (None, None) => {
            tracing::warn!(
                "no --limiter-manage-token-file: the management API's quota endpoints are unavailable"
            );
            return Ok(None);
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(Some(crate::quota_cli::connect_lazy(url, &token)?)),
        Err(e) if !explicit => {
            tracing::warn!(path = %path.display(), error = %e, "no quota admin token: the management API's quota endpoints are unavailable");
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot read the limiter manage token {}",
            path.display()
        ))),
    }
}

/// `value=role`, for `--operator-role-map`.
fn role_mapping(text: &str) -> Result<(String, crate::manage::Role), String> {
    let (value, role) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}': write claim-value=role"))?;
    let role = crate::manage::Role::parse(role.trim())
        .ok_or_else(|| format!("'{role}' is not viewer, editor, admin or auditor"))?;
    Ok((value.trim().to_owned(), role))
}

/// The file (in DATA_DIR/limiter) holding the in-process limiter's admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Polls the store's version and swaps in a new snapshot when it moves. If the store cannot be
/// read, the node keeps serving its last good snapshot and reports not-ready until it can. If
/// a stored version cannot be compiled (it bypassed validation), the node keeps its snapshot,
/// stays ready, reports the rejected version, and does not retry that version.
async fn follow_changes(
    wake: Arc<tokio::sync::Notify>,
    followed: Followed,
    store: Store,
    gateway: Arc<Gateway>,
    health: Arc<Health>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rejected = None;
    let mut followed = Some(followed);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wake.notified() => {}
            _ = crate::server::stopped(&mut stop) => return,
        }
        // A hung database must not hold up shutdown.
        let outcome = tokio::select! {
            outcome = refresh(&store, &mut followed, rejected) => outcome,
            _ = crate::server::stopped(&mut stop) => return,
        };
        match outcome {
            Refresh::Unchanged => health.set_store_reachable(true),
            Refresh::Swapped(snapshot) => {
                tracing::info!(version = snapshot.version, "configuration version active");
                gateway.snapshot.replace(*snapshot);
                health.set_rejected_version(0);
                health.set_store_reachable(true);
            }
            Refresh::Rejected { version, reason } => {
                tracing::error!(version, %reason, "stored configuration cannot be compiled; keeping the last good snapshot");
                rejected = Some(version);
                health.set_rejected_version(version);
                health.set_store_reachable(true);
            }
            Refresh::Unreachable(reason) => {
                tracing::warn!(%reason, "cannot read the configuration store; keeping the last good snapshot");
                health.set_store_reachable(false);
            }
        }
    }
}

enum Refresh {
    Unchanged,
    Swapped(Box<Snapshot>),
    Rejected { version: u64, reason: String },
    Unreachable(String),
}

/// The stored configuration a node follows, as of one version (which its snapshot was compiled
/// from, unless that version was rejected).
struct Followed {
    version: u64,
    config: Config,
    /// The API-token table `config` indexes; `None` when it must be built whole.
    tokens: Option<TokenTable>,
}

/// Reads what changed since the followed version (or, with none, everything) and compiles it.
async fn refresh(store: &Store, followed: &mut Option<Followed>, rejected: Option<u64>) -> Refresh {
    let version = match store.version().await {
        Ok(v) if Some(v) == followed.as_ref().map(|f| f.version) || Some(v) == rejected => {
            return Refresh::Unchanged;
        }
        Ok(v) => v,
        Err(e) => return Refresh::Unreachable(e.to_string()),
    };
    // Only the objects written or deleted since: the cost of a change, not of the catalogue.
    if let Some(f) = followed.as_mut().filter(|f| version > f.version) {
        match store.changes_since(f.version).await {
            Ok(changes) => {
                let tokens = TokenChange::before(&f.config, &changes.written);
                let patched = patch(&mut f.config, changes.written);
                if patched.is_ok() && objects(&f.config) == changes.objects {
                    f.version = changes.version;
                    f.tokens = f
                        .tokens
                        .take()
                        .zip(tokens)
                        .and_then(|(table, change)| change.apply(&table, &f.config));
                    return compile(f);
                }
                tracing::warn!(
                    error = patched.err().map(|e| e.to_string()),
                    "the configuration's changes do not add up; reading it whole"
                );
            }
            Err(e) => return Refresh::Unreachable(e.to_string()),
        }
    }
    // The first read, a copy that drifted, or a store that went back (restored): everything.
    *followed = None;
    match store.load().await {
        Ok((at, records)) => match assemble_owned(records) {
            Ok(config) => compile(followed.insert(Followed {
                version: at,
                config,
                tokens: None,
            })),
            Err(e) => Refresh::Rejected {
                version: at,
                reason: e.to_string(),
            },
        },
        Err(e) => Refresh::Unreachable(e.to_string()),
    }
}

/// Compiles the followed configuration, reusing its token table when it is up to date.
fn compile(f: &mut Followed) -> Refresh {
    let compiled = match f.tokens.take() {
        Some(tokens) => Snapshot::compile_with_tokens(f.version, &f.config, tokens),
        None => Snapshot::compile(f.version, &f.config),
    };
    match compiled {
        Ok(snapshot) => {
            #[cfg(debug_assertions)]
            same_tokens_as_whole_compile(&snapshot, &f.config);
            f.tokens = Some(snapshot.tokens.clone());
            Refresh::Swapped(Box::new(snapshot))
        }
        Err(e) => Refresh::Rejected {
            version: f.version,
            reason: e.to_string(),
        },
    }
}

/// Debug builds (and so every test) check that the token table followed change by change is
/// the one compiling the whole configuration gives.
#[cfg(debug_assertions)]
fn same_tokens_as_whole_compile(snapshot: &Snapshot, config: &Config) {
    let whole = Snapshot::compile(snapshot.version, config).expect("compiled once already");
    let entries = |s: &Snapshot| {
        let mut all: Vec<_> = s
            .tokens
            .iter()
            .map(|(h, e)| (*h, e.client, e.profile, e.credential.clone(), e.expires_at))
            .collect();
        all.sort_by_key(|row| row.0);
        all
    };
    assert!(
        entries(snapshot) == entries(&whole),
        "the token table followed by changes differs from a whole compile"
    );
}

/// A duration greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be greater than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// An address (`10.0.0.1`) or a CIDR block (`10.0.0.0/8`).
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{text}' is neither an IP address nor a CIDR block"))
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
