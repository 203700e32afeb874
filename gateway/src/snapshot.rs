//! The compiled, immutable view of the configuration that the data plane reads. A request
//! loads one `Snapshot` and keeps it to the end; a configuration change builds a new one and
//! swaps it in atomically, so the request path never reads the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Method;
use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use time::OffsetDateTime;

use crate::auth::assertion::{self, AssertionKey, AssertionKeys};
use crate::auth::mtls;
use crate::config::env_ref;
use crate::forward::UpstreamTarget;
use crate::model::UpstreamAuth;
use crate::model::{
    Client, ClientId, CollectionId, Config, Credential, CredentialId, CredentialKind, Environment,
    OperationId, ProfileId, ProviderId, Status,
};
use crate::route::template::PathTemplate;
use crate::route::{RouteConflict, RouteSpec, Router};
use crate::upstream_auth::ClientCredentials;

mod tokens;

pub use self::tokens::{TokenChange, TokenTable};

/// Everything a request needs, compiled from one configuration version.
pub struct Snapshot {
    pub version: u64,
    pub collections: Vec<CompiledCollection>,
    pub router: Router,
    pub clients: Vec<CompiledClient>,
    /// API token hash → the credential it belongs to. Revoked tokens are not indexed.
    pub tokens: TokenTable,
    pub providers: Vec<CompiledProvider>,
    /// OIDC credentials: which verified tokens (provider and claims) are which profile.
    pub oidc_bindings: Vec<OidcBinding>,
    /// `signed_jwt` credentials: the keys client-signed assertions are checked with.
    pub assertions: AssertionKeys,
    /// `mtls` credentials pinned by certificate fingerprint.
    pub mtls_pins: HashMap<[u8; 32], TokenEntry>,
    /// `mtls` credentials bound to a CA: any certificate chaining to it is that profile.
    pub mtls_cas: Vec<(Arc<dyn ClientCertVerifier>, TokenEntry)>,
    /// MCP tool name → (collection, operation) indexes.
    pub tools: HashMap<String, (usize, usize)>,
}

/// An identity provider whose tokens are accepted.
pub struct CompiledProvider {
    pub id: ProviderId,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub clock_skew: Duration,
}

/// Binds tokens of one provider carrying these claim values to a profile.
pub struct OidcBinding {
    pub provider: usize,
    pub claims: Vec<(String, String)>,
    pub entry: TokenEntry,
}

/// A client and its profiles.
pub struct CompiledClient {
    pub id: ClientId,
    pub partner: String,
    pub active: bool,
    pub profiles: Vec<CompiledProfile>,
}

/// A profile's access contract, ready for authorization.
pub struct CompiledProfile {
    pub id: ProfileId,
    pub environment: Environment,
    pub collections: HashSet<CollectionId>,
    /// Sorted and deduplicated.
    pub scopes: Vec<String>,
    pub quota_policy: Option<String>,
    /// Empty: any address.
    pub ip_allowlist: Vec<IpNet>,
    pub active: bool,
    pub expires_at: Option<OffsetDateTime>,
}

/// Where a credential leads: its client's and profile's places in the snapshot.
#[derive(Clone)]
pub struct TokenEntry {
    pub client: usize,
    pub profile: usize,
    pub credential: CredentialId,
    pub expires_at: Option<OffsetDateTime>,
}

impl TokenEntry {
    fn of(client: usize, profile: usize, credential: &Credential) -> Self {
        Self {
            client,
            profile,
            credential: credential.id.clone(),
            expires_at: credential.expires_at,
        }
    }
}

/// A published collection, ready to forward to.
pub struct CompiledCollection {
    pub id: CollectionId,
    pub version: String,
    pub base_path: String,
    pub upstreams: HashMap<Environment, UpstreamTarget>,
    /// Headers added upstream, with `${VAR}` references resolved — or why they could not be.
    pub headers: Result<Vec<(HeaderName, HeaderValue)>, String>,
    pub upstream_timeout: Option<Duration>,
    /// OAuth2 client credentials the gateway presents upstream.
    pub oauth2: Option<ClientCredentials>,
    /// Whether the upstream receives a gateway-signed identity assertion.
    pub identity_assertion: bool,
    pub quota_policy: Option<String>,
    pub description: String,
    /// How its operations appear through the Gateway MCP; the node's default when unset.
    pub mcp_mode: Option<crate::model::McpMode>,
    pub operations: Vec<CompiledOperation>,
}

/// A published operation.
pub struct CompiledOperation {
    pub id: OperationId,
    /// Scopes the caller must hold.
    pub scopes: Vec<String>,
    pub methods: Vec<Method>,
    pub template: PathTemplate,
    pub target: PathTemplate,
    /// Bodies kept in request records, if the operation asks for it.
    pub capture_body: Option<crate::model::BodyCapture>,
    /// The operation as an MCP tool, when it is exposed to agents.
    pub tool: Option<Arc<crate::mcp::tools::Tool>>,
}

/// A stored configuration that cannot be compiled (it bypassed validation).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("collection {collection}: {message}")]
    Invalid {
        collection: CollectionId,
        message: String,
    },
    #[error("client {client}: {message}")]
    Client { client: ClientId, message: String },
    #[error("collection {collection}: {source}")]
    Conflict {
        collection: CollectionId,
        source: RouteConflict,
    },
}

impl Snapshot {
    /// Compiles a validated configuration. Only published collections and operations are
    /// routed. Environment variables referenced by headers are read now, from this process.
    pub fn compile(version: u64, config: &Config) -> Result<Self, CompileError> {
        Self::build(version, config, None)
    }

    /// Compiles `config` with an API-token table already brought up to date with it (by a
    /// [`TokenChange`]), so that its tokens are not indexed again.
    pub fn compile_with_tokens(
        version: u64,
        config: &Config,
        tokens: TokenTable,
    ) -> Result<Self, CompileError> {
        Self::build(version, config, Some(tokens))
    }

    fn build(
        version: u64,
        config: &Config,
        tokens: Option<TokenTable>,
    ) -> Result<Self, CompileError> {
        let mut collections = Vec::new();
        let mut router = Router::default();
        // Operations offered as MCP tools: (collection index, operation index, model).
        let mut exposed = Vec::new();
        for c in config
            .collections
            .iter()
            .filter(|c| c.status == Status::Published)
        {
            let invalid = |message: String| CompileError::Invalid {
                collection: c.id.clone(),
                message,
            };
            let mut upstreams = HashMap::new();
            for (env, url) in &c.upstreams {
                upstreams.insert(env.clone(), UpstreamTarget::parse(url).map_err(invalid)?);
            }
            let mut operations = Vec::new();
            for op in c
                .operations
                .iter()
                .filter(|o| o.status == Status::Published)
            {
                if crate::mcp::tools::exposed(c, op) {
                    exposed.push((collections.len(), operations.len(), c, op));
                }
                let template = PathTemplate::parse(&op.path).map_err(|e| invalid(e.to_string()))?;
                let target = match &op.target_path {
                    Some(t) => PathTemplate::parse(t).map_err(|e| invalid(e.to_string()))?,
                    None => template.clone(),
                };
                let methods = op
                    .methods
                    .iter()
                    .map(|m| Method::from_bytes(m.as_bytes()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(e.to_string()))?;
                operations.push(CompiledOperation {
                    id: op.id.clone(),
                    scopes: op.scopes.clone(),
                    methods,
                    template,
                    target,
                    capture_body: op.capture_body.clone(),
                    tool: None,
                });
            }
            router
                .add_collection(
                    &c.base_path,
                    operations.iter().enumerate().map(|(i, op)| RouteSpec {
                        operation: i,
                        methods: &op.methods,
                        template: &op.template,
                    }),
                )
                .map_err(|source| CompileError::Conflict {
                    collection: c.id.clone(),
                    source,
                })?;
            collections.push(CompiledCollection {
                id: c.id.clone(),
                version: c.version.clone(),
                base_path: c.base_path.clone(),
                upstreams,
                headers: resolve_headers(&c.headers, c.upstream_auth.as_ref()),
                oauth2: client_credentials(c.upstream_auth.as_ref()),
                upstream_timeout: c.upstream_timeout,
                identity_assertion: c.identity_assertion,
                quota_policy: c.quota_policy.clone(),
                description: c.description.clone(),
                mcp_mode: c.mcp.as_ref().and_then(|m| m.mode),
                operations,
            });
        }
        let wanted: Vec<_> = exposed
            .iter()
            .map(|(_, _, c, op)| {
                (
                    c.id.as_str(),
                    op.id.as_str(),
                    op.mcp.as_ref().and_then(|m| m.tool_name.as_deref()),
                )
            })
            .collect();
        let names = crate::mcp::tools::assign_names(&wanted);
        let mut tools = HashMap::new();
        for ((ci, oi, c, op), name) in exposed.into_iter().zip(names) {
            tools.insert(name.clone(), (ci, oi));
            collections[ci].operations[oi].tool =
                Some(Arc::new(crate::mcp::tools::Tool::compile(name, c, op)));
        }
        let providers: Vec<CompiledProvider> = config
            .identity_providers
            .iter()
            .map(|p| CompiledProvider {
                id: p.id.clone(),
                issuer: p.issuer.clone(),
                audiences: p.audiences.clone(),
                jwks_uri: p.jwks_uri.clone(),
                clock_skew: p.clock_skew,
            })
            .collect();
        let index_tokens = tokens.is_none();
        let tokens = tokens.unwrap_or_else(|| {
            // Sized up front: with a million tokens, growing the table was a fifth of a compile.
            TokenTable::with_capacity(
                config
                    .clients
                    .iter()
                    .flat_map(|c| &c.profiles)
                    .map(|p| p.credentials.len())
                    .sum(),
            )
        });
        let mut index = CredentialIndex {
            providers: &providers,
            tokens,
            index_tokens,
            oidc: Vec::new(),
            assertions: AssertionKeys::new(),
            mtls_pins: HashMap::new(),
            mtls_cas: Vec::new(),
        };
        let mut clients = Vec::new();
        for (ci, client) in config.clients.iter().enumerate() {
            clients.push(compile_client(ci, client, &mut index)?);
        }
        let CredentialIndex {
            tokens,
            oidc: oidc_bindings,
            assertions,
            mtls_pins,
            mtls_cas,
            ..
        } = index;
        Ok(Self {
            version,
            collections,
            router,
            clients,
            tokens,
            providers,
            oidc_bindings,
            assertions,
            mtls_pins,
            mtls_cas,
            tools,
        })
    }
}

/// Where each credential kind is looked up from.
struct CredentialIndex<'a> {
    providers: &'a [CompiledProvider],
    tokens: TokenTable,
    /// False when `tokens` came up to date already.
    index_tokens: bool,
    oidc: Vec<OidcBinding>,
    assertions: AssertionKeys,
    mtls_pins: HashMap<[u8; 32], TokenEntry>,
    mtls_cas: Vec<(Arc<dyn ClientCertVerifier>, TokenEntry)>,
}

fn compile_client(
    index: usize,
    client: &Client,
    creds: &mut CredentialIndex<'_>,
) -> Result<CompiledClient, CompileError> {
    let invalid = |message: String| CompileError::Client {
        client: client.id.clone(),
        message,
    };
    let mut profiles = Vec::new();
    for (pi, p) in client.profiles.iter().enumerate() {
        let ip_allowlist = p
            .ip_allowlist
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| invalid(format!("profile {}: bad ip_allowlist entry '{e}'", p.id)))
            })
            .collect::<Result<_, _>>()?;
        let mut scopes = p.scopes.clone();
        scopes.sort();
        scopes.dedup();
        for cred in p.credentials.iter().filter(|c| c.revoked_at.is_none()) {
            // Made only where indexed: with a million tokens reused, that is nowhere.
            let entry = || TokenEntry::of(index, pi, cred);
            match &cred.kind {
                CredentialKind::ApiToken { .. } => {
                    if creds.index_tokens {
                        let hash =
                            tokens::indexed_hash(cred)
                                .and_then(Result::ok)
                                .ok_or_else(|| {
                                    invalid(format!("credential {}: bad token_hash", cred.id))
                                })?;
                        creds.tokens.insert(hash, entry());
                    }
                }
                CredentialKind::Oidc { provider, claims } => {
                    let provider = creds
                        .providers
                        .iter()
                        .position(|p| &p.id == provider)
                        .ok_or_else(|| {
                            invalid(format!(
                                "credential {}: unknown provider {provider}",
                                cred.id
                            ))
                        })?;
                    creds.oidc.push(OidcBinding {
                        provider,
                        claims: claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        entry: entry(),
                    });
                }
                CredentialKind::SignedJwt {
                    public_key_pem,
                    secret_env,
                    algorithm,
                } => {
                    let algorithm =
                        assertion::algorithm(algorithm.as_deref(), secret_env.is_some())
                            .map_err(|e| invalid(format!("credential {}: {e}", cred.id)))?;
                    // A secret is read from this process's environment now; without it the
                    // credential cannot be checked on this node, and its assertions are refused.
                    let secret = match secret_env {
                        Some(var) => match std::env::var(var) {
                            // A short secret can be guessed; an empty one forges anything.
                            Ok(v) if v.len() >= 32 => Some(v.into_bytes()),
                            Ok(_) | Err(_) => {
                                tracing::warn!(credential = %cred.id, variable = %var, "signed_jwt secret is unset or shorter than 32 bytes; refusing its assertions");
                                continue;
                            }
                        },
                        None => None,
                    };
                    let key = assertion::decoding_key(
                        public_key_pem.as_deref(),
                        secret.as_deref(),
                        algorithm,
                    )
                    .map_err(|e| invalid(format!("credential {}: {e}", cred.id)))?;
                    creds.assertions.insert(
                        cred.id.clone(),
                        AssertionKey {
                            key,
                            algorithm,
                            entry: entry(),
                            issuer: client.id.0.clone(),
                        },
                    );
                }
                CredentialKind::Mtls {
                    fingerprint_sha256,
                    ca_pem,
                } => match (fingerprint_sha256, ca_pem) {
                    (Some(fp), _) => {
                        let pin = mtls::parse_fingerprint(fp).ok_or_else(|| {
                            invalid(format!("credential {}: bad fingerprint", cred.id))
                        })?;
                        creds.mtls_pins.insert(pin, entry());
                    }
                    (None, Some(pem)) => {
                        let verifier = mtls::ca_verifier(pem)
                            .map_err(|e| invalid(format!("credential {}: {e}", cred.id)))?;
                        creds.mtls_cas.push((verifier, entry()));
                    }
                    (None, None) => {
                        return Err(invalid(format!(
                            "credential {}: no certificate binding",
                            cred.id
                        )));
                    }
                },
            }
        }
        profiles.push(CompiledProfile {
            id: p.id.clone(),
            environment: p.environment.clone(),
            collections: p.collections.iter().cloned().collect(),
            scopes,
            quota_policy: p.quota_policy.clone(),
            ip_allowlist,
            active: p.active,
            expires_at: p.expires_at,
        });
    }
    Ok(CompiledClient {
        id: client.id.clone(),
        partner: client.partner.clone(),
        active: client.active,
        profiles,
    })
}

fn resolve_headers(
    headers: &std::collections::BTreeMap<String, String>,
    auth: Option<&UpstreamAuth>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let env = |var: &str| {
        std::env::var(var).map_err(|_| format!("environment variable '{var}' is not set"))
    };
    let mut out: Vec<(HeaderName, HeaderValue)> = headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = env_ref::expand(value, |var| std::env::var(var).ok())
                .map_err(|e| format!("header {name}: {e}"))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("header {name}: invalid value"))?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect::<Result<_, String>>()?;
    let authorization = match auth {
        Some(UpstreamAuth::Basic {
            username,
            password_env,
        }) => {
            use base64::Engine;
            let pair = format!("{username}:{}", env(password_env)?);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
        Some(UpstreamAuth::Bearer { token_env }) => Some(format!("Bearer {}", env(token_env)?)),
        Some(UpstreamAuth::Oauth2ClientCredentials {
            client_secret_env, ..
        }) => {
            // Fetched per request from the token cache; only check the secret is here.
            env(client_secret_env)?;
            None
        }
        None => None,
    };
    if let Some(value) = authorization {
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "upstream_auth: the credential is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        out.push((http::header::AUTHORIZATION, value));
    }
    Ok(out)
}

fn client_credentials(auth: Option<&UpstreamAuth>) -> Option<ClientCredentials> {
    match auth? {
        UpstreamAuth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret_env,
            scopes,
        } => Some(ClientCredentials {
            token_url: token_url.clone(),
            client_id: client_id.clone(),
            client_secret: std::env::var(client_secret_env).ok()?,
            scopes: scopes.clone(),
        }),
        UpstreamAuth::Basic { .. } | UpstreamAuth::Bearer { .. } => None,
    }
}

/// The current snapshot, shared by every connection and swapped whole on change.
pub struct SnapshotCell(ArcSwap<Snapshot>);

impl SnapshotCell {
    pub fn new(snapshot: Snapshot) -> Self {
        Self(ArcSwap::from_pointee(snapshot))
    }

    /// The snapshot a request should use from start to end.
    pub fn current(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    pub fn replace(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}
