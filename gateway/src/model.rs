//! The configuration's domain objects — collections, operations, clients, profiles and
//! credentials — as typed values. They are what `apply` reads, the store keeps and `export`
//! writes; `config::validate` checks them and `snapshot` compiles them for the data plane.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            schemars::JsonSchema,
        )]
        #[serde(transparent)]
        #[schemars(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(
    /// Identifies a collection (an API product), e.g. `payments`.
    CollectionId
);
id_type!(
    /// Identifies an operation within its collection, e.g. `get-charge`.
    OperationId
);
id_type!(
    /// Identifies a client (a consumer: app, partner service, agent).
    ClientId
);
id_type!(
    /// Identifies a profile within its client.
    ProfileId
);
id_type!(
    /// Identifies a credential; appears in audit records, never the secret itself.
    CredentialId
);
id_type!(
    /// An environment name such as `sandbox` or `production`.
    Environment
);
id_type!(
    /// Identifies an identity provider.
    ProviderId
);

/// An RFC 3339 time, e.g. `2026-12-31T23:59:59Z` (for schemas).
#[derive(schemars::JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code)]
pub(crate) struct Rfc3339(#[schemars(regex(pattern = r"^\d{4}-\d{2}-\d{2}T"))] String);

/// A duration such as `30s`, `250ms`, `5m` or `90d` (for schemas).
#[derive(schemars::JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code)]
pub(crate) struct HumanDuration(String);

/// The whole declarative configuration: what `apply` reads and `export` writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<Collection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<Client>,
    /// External OIDC/JWT issuers whose access tokens identify callers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_providers: Vec<IdentityProvider>,
}

/// An external OpenID Connect provider (or any JWT issuer publishing a JWKS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    pub id: ProviderId,
    /// The exact `iss` of its tokens; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted `aud` values: a token must carry at least one.
    pub audiences: Vec<String>,
    /// The key set's URL, if discovery should be skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Tolerance for `exp`/`nbf` against this gateway's clock.
    #[serde(default = "default_skew", with = "humantime_serde_opt::required")]
    #[schemars(with = "HumanDuration")]
    pub clock_skew: std::time::Duration,
}

fn default_skew() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// Lifecycle state of a collection or operation. Only published objects are routed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    #[default]
    Published,
}

impl Status {
    fn is_published(&self) -> bool {
        *self == Status::Published
    }
}

/// An API product: a base path, its upstream per environment and its operations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Collection {
    pub id: CollectionId,
    /// Path prefix on the gateway, e.g. `/payments`. Unique across collections.
    pub base_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Status::is_published")]
    pub status: Status,
    /// Upstream base URL per environment, e.g. `sandbox: https://payments-sbx.internal/v1`.
    pub upstreams: BTreeMap<Environment, String>,
    /// Headers added to every upstream request. Values may reference environment variables of
    /// the gateway process as `${NAME}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Time allowed for the upstream to answer with response headers; the node default if unset.
    #[serde(
        default,
        with = "humantime_serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<HumanDuration>")]
    pub upstream_timeout: Option<std::time::Duration>,
    /// The gateway's own credential for the upstream (never the caller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuth>,
    /// Send the upstream a short-lived JWT, signed by the gateway, asserting who called
    /// (`X-Portcullis-Identity`); verify it with the key set at the admin listener's
    /// `/.well-known/jwks.json`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub identity_assertion: bool,
    /// Name of the quota policy (defined in the limiter) that protects this collection: its
    /// limits apply to every caller, beside the caller's profile policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_policy: Option<String>,
    /// How this collection's operations appear to agents through the Gateway MCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<CollectionMcp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<Operation>,
}

/// A collection's Gateway MCP settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionMcp {
    /// Expose every published operation as a tool (an operation's own `mcp.enabled: false`
    /// still hides it). Without it, only operations with an `mcp` block are exposed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expose_all: bool,
    /// One tool per operation, or the discovery tools (catalogue mode) for large APIs; the
    /// node's `--mcp-mode` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<McpMode>,
}

/// How a collection's operations are offered as MCP tools.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum McpMode {
    /// One tool per operation.
    Tools,
    /// Discovery tools (`list_collections`, `list_endpoints`, `search_endpoints`,
    /// `endpoint_details`, `execute_endpoint`) over the operations.
    Catalogue,
}

/// How the gateway authenticates itself to an upstream. Secrets are named by environment
/// variables of the gateway process, never stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamAuth {
    /// `Authorization: Basic …`.
    Basic {
        username: String,
        password_env: String,
    },
    /// `Authorization: Bearer <static token>`.
    Bearer { token_env: String },
    /// `Authorization: Bearer <token>` from an OAuth2 token endpoint (client credentials
    /// grant, client_secret_basic), cached until shortly before it expires.
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret_env: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scopes: Vec<String>,
    },
}

fn default_version() -> String {
    "1".to_owned()
}

/// One endpoint inside a collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    pub id: OperationId,
    /// HTTP methods, upper case (`GET`, `POST`, …).
    pub methods: Vec<String>,
    /// Path template relative to the collection's base path: literal segments, whole-segment
    /// parameters `{name}`, and an optional trailing wildcard `/*`.
    pub path: String,
    /// Path sent upstream (relative to the upstream URL), with the same parameters and wildcard;
    /// defaults to `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_path: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    /// JSON Schema of the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_schema: Option<serde_json::Value>,
    /// JSON Schema of a successful response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<serde_json::Value>,
    /// Scopes a caller must hold to call this operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Status::is_published")]
    pub status: Status,
    /// Exposure to agents through the Gateway MCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpExposure>,
    /// Keep the request and response bodies in this operation's request records (off by
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_body: Option<BodyCapture>,
}

/// Body capture for request records: at most `max_bytes` of each body, JSON fields named in
/// `redact` (at any depth, case-insensitive) replaced. A body that is not complete JSON is
/// kept only when nothing is to be redacted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyCapture {
    #[serde(default = "default_capture_bytes")]
    pub max_bytes: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
}

fn default_capture_bytes() -> usize {
    4096
}

/// The largest body capture allowed.
pub const MAX_CAPTURE_BYTES: usize = 64 * 1024;

/// A typed request parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    #[serde(rename = "in")]
    pub location: ParameterLocation,
    #[serde(rename = "type", default)]
    pub kind: ParameterType,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The value's JSON Schema, when `type` says too little (enums, formats, arrays); it
    /// replaces `type` in tool input schemas. Arrays travel as repeated query parameters, or
    /// comma-separated in a path segment or header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// Where a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParameterLocation {
    Path,
    Query,
    Header,
}

/// The JSON type of a parameter's value.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ParameterType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
}

/// How an operation appears as an MCP tool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpExposure {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world: Option<bool>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A consumer of the APIs: an app, a partner service, an internal service or an AI agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub id: ClientId,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Partner or organisation label, e.g. `acme`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partner: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub contact: String,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<Profile>,
}

/// A client's access contract for one environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub id: ProfileId,
    pub environment: Environment,
    /// Collections this profile may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<CollectionId>,
    /// Scopes this profile holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Name of the quota policy (defined in the limiter) that applies to this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_policy: Option<String>,
    /// Source addresses allowed to use this profile: addresses or CIDR blocks. Empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Rfc3339>")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
}

/// Proof that a caller is a profile. (Unknown fields are refused by `CredentialKind`, which
/// receives every field not named here.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Credential {
    pub id: CredentialId,
    #[serde(flatten)]
    pub kind: CredentialKind,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Rfc3339>")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Rfc3339>")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// The kinds of credential. Secrets are never stored: API tokens are kept as a keyed hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialKind {
    /// An opaque API token, stored as the hex HMAC-SHA-256 of the token under the server secret.
    ApiToken { token_hash: String },
    /// An access token from an external OIDC provider, bound by provider and claims.
    Oidc {
        /// The `id` of an entry in `identity_providers`.
        provider: ProviderId,
        /// Claims that must be present with these values, e.g. `azp: acme-app`.
        claims: BTreeMap<String, String>,
    },
    /// A client certificate, pinned by SHA-256 fingerprint (hex) or chained to a CA (PEM).
    Mtls {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint_sha256: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
    },
    /// A short-lived assertion (a JWT with `kid` = this credential's id, `iss` = the client id)
    /// signed by the client with its own key (PEM public key here) or a shared secret read from
    /// an environment variable of the gateway process.
    SignedJwt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key_pem: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_env: Option<String>,
        /// The one algorithm accepted: ES256 (default for a public key), ES384, RS256, PS256 or
        /// EdDSA with a public key; HS256 (default for a secret), HS384 or HS512 with a secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        algorithm: Option<String>,
    },
}

/// Serde support for optional durations written as `5s`, `250ms`, `1m`.
pub(crate) mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }

    /// The same, for a duration that is always present.
    pub(super) mod required {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(in crate::model) fn serialize<S: Serializer>(
            d: &Duration,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.serialize_str(&humantime::format_duration(*d).to_string())
        }

        pub(in crate::model) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Duration, D::Error> {
            let text = String::deserialize(d)?;
            humantime::parse_duration(&text).map_err(serde::de::Error::custom)
        }
    }
}
