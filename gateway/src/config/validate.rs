//! Whole-configuration validation: identifiers, templates, upstream URLs, headers, route
//! conflicts and cross-references. Every problem is reported with its field path.

use std::collections::{HashMap, HashSet};

use http::Method;
use http::header::HeaderName;

use super::FieldError;
use super::env_ref;
use crate::forward::{UpstreamTarget, is_reserved_header};
use crate::model::{
    Client, Collection, Config, Credential, CredentialKind, Operation, Profile, UpstreamAuth,
};
use crate::route::template::PathTemplate;
use crate::route::{RouteSpec, Router};

/// Checks a configuration; returns every problem found.
pub fn validate(config: &Config) -> Result<(), Vec<FieldError>> {
    validate_in(config, &Config::default())
}

/// Whether a header cannot be a header parameter: the gateway sets it, or it carries the
/// caller's credential, identity claims or content negotiation.
pub fn gateway_owned_parameter(h: &http::HeaderName) -> bool {
    is_reserved_header(h)
        || *h == http::header::AUTHORIZATION
        || *h == http::header::CONTENT_TYPE
        || *h == http::header::ACCEPT
        || *h == http::header::COOKIE
        || h.as_str() == "x-client-id"
        || h.as_str() == "x-profile-id"
}

/// Checks a configuration whose references may also point at objects of `context` (what the
/// store already holds, when a file is applied on top of it). Paths refer to `config`.
pub fn validate_in(config: &Config, context: &Config) -> Result<(), Vec<FieldError>> {
    let mut v = Validator::default();
    let mut base_paths: HashMap<&str, &str> = HashMap::new();
    let mut collection_ids = HashSet::new();
    for (i, c) in config.collections.iter().enumerate() {
        let at = format!("collections[{i}]");
        v.id(&format!("{at}.id"), c.id.as_str());
        if !collection_ids.insert(c.id.as_str()) {
            v.fail(
                format!("{at}.id"),
                format!("duplicate collection id '{}'", c.id),
            );
        }
        if let Some(other) = base_paths.insert(c.base_path.as_str(), c.id.as_str()) {
            v.fail(
                format!("{at}.base_path"),
                format!(
                    "'{}' is already the base path of collection '{other}'",
                    c.base_path
                ),
            );
        }
        v.collection(&at, c);
    }
    v.tool_names(config, context);
    let mut provider_ids = HashSet::new();
    let mut issuers = HashSet::new();
    for (i, p) in config.identity_providers.iter().enumerate() {
        let at = format!("identity_providers[{i}]");
        v.id(&format!("{at}.id"), p.id.as_str());
        if !provider_ids.insert(p.id.as_str()) {
            v.fail(
                format!("{at}.id"),
                format!("duplicate identity provider id '{}'", p.id),
            );
        }
        if !issuers.insert(p.issuer.as_str()) {
            v.fail(
                format!("{at}.issuer"),
                format!("issuer '{}' is given twice", p.issuer),
            );
        }
        if let Err(e) = secure_url(&p.issuer) {
            v.fail(format!("{at}.issuer"), e);
        }
        if let Some(Err(e)) = p.jwks_uri.as_deref().map(secure_url) {
            v.fail(format!("{at}.jwks_uri"), e);
        }
        if p.audiences.is_empty() || p.audiences.iter().any(String::is_empty) {
            v.fail(
                format!("{at}.audiences"),
                "list the audiences this gateway accepts (at least one)",
            );
        }
        if p.clock_skew > std::time::Duration::from_secs(600) {
            v.fail(format!("{at}.clock_skew"), "at most 10m");
        }
    }
    let mut credential_ids = HashSet::new();
    let mut client_ids = HashSet::new();
    for (i, client) in config.clients.iter().enumerate() {
        let at = format!("clients[{i}]");
        v.id(&format!("{at}.id"), client.id.as_str());
        if !client_ids.insert(client.id.as_str()) {
            v.fail(
                format!("{at}.id"),
                format!("duplicate client id '{}'", client.id),
            );
        }
        v.client(&at, client, config, context, &mut credential_ids);
    }
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(v.errors)
    }
}

/// An http(s) URL that carries keys or secrets: https, or plain http only on loopback (where
/// nobody can tamper with it in transit).
fn secure_url(url: &str) -> Result<(), String> {
    UpstreamTarget::parse(url)?;
    if url.starts_with("https://") {
        return Ok(());
    }
    let host = url
        .trim_start_matches("http://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map_or_else(
            || host.rsplit_once(':').map_or(host, |(h, _)| h),
            |(h, _)| h,
        );
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "'{url}' must use https (plain http is allowed only on loopback)"
        ))
    }
}

/// Environment variables that hold the node's own secrets: no configuration may send them
/// anywhere.
/// The gateway's own settings and secrets (the token secret, the store URL, the bootstrap
/// admin token, …): configuration may not send them anywhere. Anyone who may change
/// configuration could otherwise have one sent to a host of their choosing.
fn reserved_variable(name: &str) -> bool {
    name.starts_with("PORTCULLIS_")
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
    /// Certificate fingerprints already bound to a credential.
    pins: HashSet<String>,
    /// API token hashes already bound to a credential.
    token_hashes: HashSet<String>,
}

impl Validator {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A quota policy's name, by the limiter's rule for names.
    fn policy_name(&mut self, path: &str, name: &str) {
        if !portcullis_limiter::policy::is_name(name) {
            self.fail(
                path,
                format!("invalid policy name '{name}': use 1-64 letters, digits, '.', '_' or '-'"),
            );
        }
    }

    /// Identifiers travel in headers, URLs and records: keep them plain.
    fn id(&mut self, path: &str, id: &str) {
        let ok = (1..=128).contains(&id.len())
            && id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            self.fail(
                path,
                format!(
                    "invalid identifier '{id}': use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            );
        }
    }

    /// Explicit MCP tool names are unique among the operations that could be exposed, and
    /// none takes a catalogue discovery tool's name.
    fn tool_names(&mut self, config: &Config, context: &Config) {
        let mut seen: HashMap<&str, String> = HashMap::new();
        let in_file: HashSet<&str> = config.collections.iter().map(|c| c.id.as_str()).collect();
        let stored = context
            .collections
            .iter()
            .filter(|c| !in_file.contains(c.id.as_str()))
            .map(|c| (None, c));
        let all = config
            .collections
            .iter()
            .enumerate()
            .map(|(i, c)| (Some(i), c))
            .chain(stored);
        for (i, c) in all {
            for (k, op) in c.operations.iter().enumerate() {
                let Some(name) = op
                    .mcp
                    .as_ref()
                    .filter(|m| m.enabled)
                    .and_then(|m| m.tool_name.as_deref())
                else {
                    continue;
                };
                let here = format!("collection '{}' operation '{}'", c.id, op.id);
                let problem = if crate::mcp::tools::DISCOVERY_TOOLS.contains(&name) {
                    Some(format!(
                        "'{name}' is reserved for the catalogue mode's discovery tools"
                    ))
                } else {
                    seen.insert(name, here.clone())
                        .map(|other| format!("tool name '{name}' is already used by {other}"))
                };
                if let (Some(problem), Some(i)) = (problem, i) {
                    self.fail(
                        format!("collections[{i}].operations[{k}].mcp.tool_name"),
                        problem,
                    );
                }
            }
        }
    }

    fn collection(&mut self, at: &str, c: &Collection) {
        match PathTemplate::parse(&c.base_path) {
            Ok(t) if t.has_wildcard() || t.params().next().is_some() => self.fail(
                format!("{at}.base_path"),
                "a base path is literal: no parameters or wildcard",
            ),
            Ok(_)
                if c.base_path == crate::mcp::PATH
                    || c.base_path.starts_with(crate::mcp::PATH_PREFIX_RESERVED)
                    || c.base_path.starts_with("/.well-known") =>
            {
                self.fail(
                    format!("{at}.base_path"),
                    format!(
                        "'{}' is reserved: /mcp is the Gateway MCP and /.well-known its metadata",
                        c.base_path
                    ),
                )
            }
            Ok(_) => {}
            Err(e) => self.fail(format!("{at}.base_path"), format!("'{}': {e}", c.base_path)),
        }
        if let Some(policy) = &c.quota_policy {
            self.policy_name(&format!("{at}.quota_policy"), policy);
        }
        if c.upstreams.is_empty() {
            self.fail(
                format!("{at}.upstreams"),
                "at least one environment's upstream is required",
            );
        }
        for (env, url) in &c.upstreams {
            self.id(&format!("{at}.upstreams"), env.as_str());
            if let Err(e) = UpstreamTarget::parse(url) {
                self.fail(format!("{at}.upstreams.{env}"), e);
            }
        }
        if let Some(auth) = &c.upstream_auth {
            let vars: Vec<(&str, &String)> = match auth {
                UpstreamAuth::Basic { password_env, .. } => vec![("password_env", password_env)],
                UpstreamAuth::Bearer { token_env } => vec![("token_env", token_env)],
                UpstreamAuth::Oauth2ClientCredentials {
                    token_url,
                    client_secret_env,
                    ..
                } => {
                    if let Err(e) = secure_url(token_url) {
                        self.fail(format!("{at}.upstream_auth.token_url"), e);
                    }
                    vec![("client_secret_env", client_secret_env)]
                }
            };
            for (field, var) in vars {
                if reserved_variable(var) {
                    self.fail(
                        format!("{at}.upstream_auth.{field}"),
                        "this variable holds the gateway's own secret",
                    );
                }
                if !env_ref::is_variable_name(var) {
                    self.fail(
                        format!("{at}.upstream_auth.{field}"),
                        format!("'{var}' is not a variable name"),
                    );
                }
            }
            if c.headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case("authorization"))
            {
                self.fail(
                    format!("{at}.headers.authorization"),
                    "upstream_auth already sets Authorization",
                );
            }
        }
        if c.upstream_timeout.is_some_and(|t| t.is_zero()) {
            self.fail(
                format!("{at}.upstream_timeout"),
                "must be greater than zero",
            );
        }
        let mut header_names = HashSet::new();
        for (name, value) in &c.headers {
            let path = format!("{at}.headers.{name}");
            if !header_names.insert(name.to_ascii_lowercase()) {
                self.fail(
                    &path,
                    "header names are case-insensitive: this one is given twice",
                );
            }
            match HeaderName::from_bytes(name.as_bytes()) {
                Err(_) => self.fail(&path, "not a valid header name"),
                Ok(h) if is_reserved_header(&h) => self.fail(
                    &path,
                    "this header is managed by the gateway and cannot be set",
                ),
                Ok(_) => {}
            }
            if let Err(e) = env_ref::check(value) {
                self.fail(&path, e.to_string());
            } else if env_ref::references(value).any(reserved_variable) {
                self.fail(
                    &path,
                    "this variable holds the gateway's own secret and cannot be sent upstream",
                );
            } else if value.chars().any(|c| c.is_control() && c != '\t') {
                self.fail(&path, "header values cannot contain control characters");
            }
        }
        let mut op_ids = HashSet::new();
        let mut templates = Vec::with_capacity(c.operations.len());
        for (j, op) in c.operations.iter().enumerate() {
            let at = format!("{at}.operations[{j}]");
            self.id(&format!("{at}.id"), op.id.as_str());
            if !op_ids.insert(op.id.as_str()) {
                self.fail(
                    format!("{at}.id"),
                    format!("duplicate operation id '{}'", op.id),
                );
            }
            templates.push(self.operation(&at, op));
        }
        // Route conflicts are checked on every operation, drafts included, so that publishing
        // one can never fail.
        let valid: Vec<(usize, Vec<Method>, PathTemplate)> = templates
            .into_iter()
            .enumerate()
            .filter_map(|(j, t)| t.map(|(m, t)| (j, m, t)))
            .collect();
        let mut router = Router::default();
        let specs = valid.iter().map(|(j, methods, template)| RouteSpec {
            operation: *j,
            methods,
            template,
        });
        if let Err(conflict) = router.add_collection(&c.base_path, specs) {
            self.fail(
                format!("{at}.operations[{}].path", conflict.operation),
                conflict.to_string(),
            );
        }
    }

    /// Checks one operation; returns its methods and template when they are usable for routing.
    fn operation(&mut self, at: &str, op: &Operation) -> Option<(Vec<Method>, PathTemplate)> {
        let mut methods = Vec::new();
        if op.methods.is_empty() {
            self.fail(format!("{at}.methods"), "at least one method is required");
        }
        for (k, m) in op.methods.iter().enumerate() {
            let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if valid && method != Method::CONNECT => {
                    if methods.contains(&method) {
                        self.fail(
                            format!("{at}.methods[{k}]"),
                            format!("'{m}' is listed twice"),
                        );
                    }
                    methods.push(method);
                }
                Ok(_) | Err(_) => self.fail(
                    format!("{at}.methods[{k}]"),
                    format!(
                        "'{m}' is not a method (use upper case, e.g. GET; CONNECT is not proxied)"
                    ),
                ),
            }
        }
        let template = match PathTemplate::parse(&op.path) {
            Ok(t) => Some(t),
            Err(e) => {
                self.fail(format!("{at}.path"), format!("'{}': {e}", op.path));
                None
            }
        };
        if let (Some(target), Some(template)) = (&op.target_path, &template) {
            match PathTemplate::parse(target) {
                Err(e) => self.fail(format!("{at}.target_path"), format!("'{target}': {e}")),
                Ok(t) => {
                    for p in t.params() {
                        if !template.params().any(|q| q == p) {
                            self.fail(
                                format!("{at}.target_path"),
                                format!("parameter '{p}' does not appear in path '{}'", op.path),
                            );
                        }
                    }
                    if t.has_wildcard() && !template.has_wildcard() {
                        self.fail(
                            format!("{at}.target_path"),
                            format!("'{target}' ends in '/*' but path '{}' does not", op.path),
                        );
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        for (k, p) in op.parameters.iter().enumerate() {
            let path = format!("{at}.parameters[{k}]");
            if p.name.is_empty() {
                self.fail(format!("{path}.name"), "a parameter needs a name");
            }
            if !seen.insert((p.name.as_str(), p.location)) {
                self.fail(
                    format!("{path}.name"),
                    format!("parameter '{}' is declared twice", p.name),
                );
            }
            let in_template = template
                .as_ref()
                .is_none_or(|t| t.params().any(|q| q == p.name));
            if p.location == crate::model::ParameterLocation::Header {
                let reserved = http::HeaderName::from_bytes(p.name.as_bytes())
                    .map_or(true, |h| gateway_owned_parameter(&h));
                if reserved {
                    self.fail(
                        format!("{path}.name"),
                        format!(
                            "'{}' cannot be a header parameter: it is not a valid header name or the gateway sets it",
                            p.name
                        ),
                    );
                }
            }
            if p.schema
                .as_ref()
                .is_some_and(|s| !(s.is_object() || s.is_boolean()))
            {
                self.fail(
                    format!("{path}.schema"),
                    "a JSON Schema is an object or a boolean",
                );
            }
            if p.location == crate::model::ParameterLocation::Path && !in_template {
                self.fail(
                    format!("{path}.name"),
                    format!(
                        "path parameter '{}' does not appear in path '{}'",
                        p.name, op.path
                    ),
                );
            }
        }
        for (field, schema) in [
            ("request_schema", &op.request_schema),
            ("response_schema", &op.response_schema),
        ] {
            if schema
                .as_ref()
                .is_some_and(|s| !(s.is_object() || s.is_boolean()))
            {
                self.fail(
                    format!("{at}.{field}"),
                    "a JSON Schema is an object or a boolean",
                );
            }
        }
        for (k, scope) in op.scopes.iter().enumerate() {
            self.scope(&format!("{at}.scopes[{k}]"), scope);
        }
        if let Some(capture) = &op.capture_body
            && !(1..=crate::model::MAX_CAPTURE_BYTES).contains(&capture.max_bytes)
        {
            self.fail(
                format!("{at}.capture_body.max_bytes"),
                format!(
                    "must be between 1 and {} bytes",
                    crate::model::MAX_CAPTURE_BYTES
                ),
            );
        }
        if let Some(name) = op.mcp.as_ref().and_then(|m| m.tool_name.as_deref()) {
            let ok = (1..=128).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                self.fail(
                    format!("{at}.mcp.tool_name"),
                    format!("'{name}': use 1-128 letters, digits, '_', '-' or '.'"),
                );
            }
        }
        Some((methods, template?)).filter(|(m, _)| !m.is_empty())
    }

    fn scope(&mut self, path: &str, scope: &str) {
        // RFC 6749 scope-token: printable ASCII except space, '"' and '\'.
        let ok = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            self.fail(path, format!("'{scope}' is not a valid scope token"));
        }
    }

    fn client(
        &mut self,
        at: &str,
        client: &Client,
        config: &Config,
        context: &Config,
        credential_ids: &mut HashSet<String>,
    ) {
        let mut profile_ids = HashSet::new();
        for (k, p) in client.profiles.iter().enumerate() {
            let at = format!("{at}.profiles[{k}]");
            self.id(&format!("{at}.id"), p.id.as_str());
            if !profile_ids.insert(p.id.as_str()) {
                self.fail(
                    format!("{at}.id"),
                    format!("duplicate profile id '{}' in client '{}'", p.id, client.id),
                );
            }
            self.profile(&at, p, config, context, credential_ids);
        }
    }

    fn profile(
        &mut self,
        at: &str,
        p: &Profile,
        config: &Config,
        context: &Config,
        credential_ids: &mut HashSet<String>,
    ) {
        self.id(&format!("{at}.environment"), p.environment.as_str());
        if let Some(policy) = &p.quota_policy {
            self.policy_name(&format!("{at}.quota_policy"), policy);
        }
        for (k, granted) in p.collections.iter().enumerate() {
            let path = format!("{at}.collections[{k}]");
            let collection = config
                .collections
                .iter()
                .chain(&context.collections)
                .find(|c| &c.id == granted);
            match collection {
                None => self.fail(path, format!("unknown collection '{granted}'")),
                Some(c) if !c.upstreams.contains_key(&p.environment) => self.fail(
                    path,
                    format!(
                        "collection '{granted}' has no upstream for environment '{}'",
                        p.environment
                    ),
                ),
                Some(_) => {}
            }
        }
        for (k, scope) in p.scopes.iter().enumerate() {
            self.scope(&format!("{at}.scopes[{k}]"), scope);
        }
        for (k, entry) in p.ip_allowlist.iter().enumerate() {
            if entry.parse::<ipnet::IpNet>().is_err() && entry.parse::<std::net::IpAddr>().is_err()
            {
                self.fail(
                    format!("{at}.ip_allowlist[{k}]"),
                    format!("'{entry}' is neither an IP address nor a CIDR block"),
                );
            }
        }
        for (k, cred) in p.credentials.iter().enumerate() {
            let path = format!("{at}.credentials[{k}]");
            self.id(&format!("{path}.id"), cred.id.as_str());
            if !credential_ids.insert(cred.id.0.clone()) {
                self.fail(
                    format!("{path}.id"),
                    format!("duplicate credential id '{}'", cred.id),
                );
            }
            self.credential(&path, cred, config, context);
        }
    }

    fn credential(&mut self, at: &str, cred: &Credential, config: &Config, context: &Config) {
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        match &cred.kind {
            CredentialKind::ApiToken { token_hash } => {
                if !hex64(token_hash) {
                    self.fail(
                        format!("{at}.token_hash"),
                        "expected 64 hex digits (HMAC-SHA-256)",
                    );
                } else if !self.token_hashes.insert(token_hash.to_ascii_lowercase()) {
                    self.fail(
                        format!("{at}.token_hash"),
                        "this token is already bound to another credential",
                    );
                }
            }
            CredentialKind::Oidc { provider, claims } => {
                let known = config
                    .identity_providers
                    .iter()
                    .chain(&context.identity_providers)
                    .any(|p| &p.id == provider);
                if !known {
                    self.fail(
                        format!("{at}.provider"),
                        format!("unknown identity provider '{provider}'"),
                    );
                }
                if claims.is_empty() {
                    self.fail(
                        format!("{at}.claims"),
                        "bind the token with at least one claim (e.g. azp or sub)",
                    );
                }
            }
            CredentialKind::Mtls {
                fingerprint_sha256,
                ca_pem,
            } => match (fingerprint_sha256, ca_pem) {
                (Some(fp), None) => {
                    let normalized = fp.replace(':', "").to_ascii_lowercase();
                    if !hex64(&normalized) {
                        self.fail(format!("{at}.fingerprint_sha256"), "expected 64 hex digits");
                    } else if !self.pins.insert(normalized) {
                        self.fail(
                            format!("{at}.fingerprint_sha256"),
                            "this certificate is already bound to another credential",
                        );
                    }
                }
                (None, Some(pem)) => {
                    if !pem.contains("-----BEGIN CERTIFICATE-----") {
                        self.fail(format!("{at}.ca_pem"), "expected a PEM certificate");
                    } else if let Err(e) = crate::auth::mtls::ca_verifier(pem) {
                        self.fail(format!("{at}.ca_pem"), e);
                    }
                }
                (Some(_), Some(_)) | (None, None) => {
                    self.fail(at, "give exactly one of fingerprint_sha256 and ca_pem")
                }
            },
            CredentialKind::SignedJwt {
                public_key_pem,
                secret_env,
                algorithm,
            } => {
                match (public_key_pem, secret_env) {
                    (Some(pem), None) => {
                        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
                            self.fail(format!("{at}.public_key_pem"), "expected a PEM public key");
                        }
                    }
                    (None, Some(var)) => {
                        if reserved_variable(var) {
                            self.fail(
                                format!("{at}.secret_env"),
                                "this variable holds the gateway's own secret",
                            );
                        } else if !env_ref::is_variable_name(var) {
                            self.fail(
                                format!("{at}.secret_env"),
                                format!("'{var}' is not a variable name"),
                            );
                        }
                    }
                    (Some(_), Some(_)) | (None, None) => {
                        self.fail(at, "give exactly one of public_key_pem and secret_env")
                    }
                }
                let with_secret = secret_env.is_some();
                match crate::auth::assertion::algorithm(algorithm.as_deref(), with_secret) {
                    Err(e) => self.fail(format!("{at}.algorithm"), e),
                    Ok(alg) => {
                        // The key must be usable with the algorithm, or the node could not
                        // compile this configuration.
                        let pem = public_key_pem
                            .as_deref()
                            .filter(|p| p.contains("-----BEGIN"));
                        if let Some(pem) = pem
                            && let Err(e) =
                                crate::auth::assertion::decoding_key(Some(pem), None, alg)
                        {
                            self.fail(format!("{at}.public_key_pem"), e);
                        }
                    }
                }
            }
        }
    }
}
