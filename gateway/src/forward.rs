//! Forwarding: builds the upstream request from the routed operation (target path with
//! parameters substituted and encoded, query kept, hop-by-hop headers removed, `X-Forwarded-*`
//! and `X-Request-ID` set, collection headers added) and sends it over pooled keep-alive
//! connections with connect and response timeouts. Bodies stream in both directions.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, InboundBodyError};
use crate::error::{ErrorCode, GatewayError};

/// `X-Request-ID`, the correlation header the gateway keeps or generates and returns.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers a caller could use to claim another address or protocol. Kept only from trusted
/// proxies.
const CLIENT_CLAIMS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// Headers some upstream frameworks treat as the real request path; a caller could use them to
/// reach an operation the gateway did not route to. Never forwarded.
const PATH_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Prefix of the headers that tell the upstream who called. Never taken from the caller.
pub const IDENTITY_PREFIX: &str = "x-portcullis-";

/// Whether the gateway owns this header, so configuration may not set it upstream.
pub fn is_reserved_header(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || name.as_str().starts_with(IDENTITY_PREFIX)
        || *name == header::HOST
        || *name == header::CONTENT_LENGTH
        || *name == X_REQUEST_ID
        || *name == X_FORWARDED_FOR
        || *name == X_FORWARDED_PROTO
        || *name == X_FORWARDED_HOST
}

/// An upstream base URL: scheme, authority and an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTarget {
    scheme: Scheme,
    authority: Authority,
    /// Prefix for every target path, without a trailing `/` (empty for the root).
    path_prefix: String,
}

impl UpstreamTarget {
    /// Parses `http(s)://host[:port][/prefix]`. Credentials in the URL are refused: they would
    /// leak into exports; put them in a header that references an environment variable.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.contains('#') {
            return Err(format!("'{url}' must not have a fragment"));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("'{url}' is not a valid URL: {e}"))?;
        let scheme = uri
            .scheme()
            .filter(|s| **s == Scheme::HTTP || **s == Scheme::HTTPS)
            .ok_or_else(|| format!("'{url}' must start with http:// or https://"))?
            .clone();
        let authority = uri
            .authority()
            .ok_or_else(|| format!("'{url}' has no host"))?
            .clone();
        // `port_u16` is None both for "no port" and for one that does not parse; tell them apart
        // by the text after the host (an IPv6 host is bracketed).
        let after_host = authority
            .as_str()
            .rsplit_once(']')
            .map_or(authority.as_str(), |(_, rest)| rest);
        if after_host.contains(':') && authority.port_u16().is_none_or(|p| p == 0) {
            return Err(format!("'{url}' has an invalid port"));
        }
        if authority.as_str().contains('@') {
            return Err(format!(
                "'{url}' contains credentials; use a header with an ${{ENV}} reference"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("'{url}' must not have a query"));
        }
        let path_prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            path_prefix,
        })
    }

    /// The full upstream URI for a target path (starting with `/`) and the caller's query.
    fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(self.path_prefix.len() + path.len() + 64);
        pq.push_str(&self.path_prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::try_from(pq)?)
            .build()
    }

    fn host_header(&self) -> HeaderValue {
        HeaderValue::from_str(self.authority.as_str()).expect("an authority is a valid header")
    }
}

/// Node-wide upstream connection settings.
#[derive(Clone, Debug)]
pub struct ForwardSettings {
    pub connect_timeout: Duration,
    /// Default time allowed for response headers; a collection may override it.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Extra PEM CA certificates trusted for https upstreams (besides the public web roots).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Peers (load balancers, proxies) whose `X-Forwarded-*`/`Forwarded` headers are kept and
    /// extended. From anyone else those headers are replaced by what the gateway saw.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// What the caller's connection tells about the request.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The certificate the caller presented in the TLS handshake, if any.
    pub client_cert: Option<Arc<crate::auth::mtls::ClientCert>>,
}

/// The pooled upstream client.
pub struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    response_timeout: Duration,
    trusted_proxies: Vec<ipnet::IpNet>,
}

/// Everything `Forwarder::send` needs to know about one call.
pub struct Outbound<'a> {
    pub target: &'a UpstreamTarget,
    /// Target path, already expanded and encoded.
    pub path: String,
    /// `x-portcullis-*` headers describing the authenticated caller.
    pub identity: &'a [(HeaderName, HeaderValue)],
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub timeout: Option<Duration>,
    pub request_id: &'a HeaderValue,
    pub peer: Peer,
}

impl Forwarder {
    pub fn new(settings: &ForwardSettings) -> Self {
        let tls = client_tls(&settings.extra_roots);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .build(connector);
        Self {
            client,
            response_timeout: settings.response_timeout,
            trusted_proxies: settings.trusted_proxies.clone(),
        }
    }

    /// Whether `ip` is one of the configured trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The caller's address: the peer, or — when the peer is a trusted proxy — the nearest
    /// untrusted address in `X-Forwarded-For`.
    pub fn source_address(&self, headers: &HeaderMap, peer: &Peer) -> IpAddr {
        let peer_ip = peer.addr.ip().to_canonical();
        if !self.is_trusted(peer_ip) {
            return peer_ip;
        }
        let chain: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        // From the nearest hop outwards: the first address not itself a trusted proxy is the
        // caller. An entry that cannot be read ends the walk — what lies beyond it was written
        // by someone we cannot vouch for — and the request counts as coming from the proxy.
        for entry in chain.iter().rev() {
            match forwarded_ip(entry) {
                Some(ip) if self.is_trusted(ip) => continue,
                Some(ip) => return ip,
                None => return peer_ip,
            }
        }
        peer_ip
    }

    /// Sends the caller's request upstream and returns the upstream's response, streaming.
    pub async fn send(
        &self,
        out: Outbound<'_>,
        parts: http::request::Parts,
        body: Body,
    ) -> Result<Response<Body>, GatewayError> {
        let uri = out.target.uri(&out.path, parts.uri.query()).map_err(|e| {
            GatewayError::new(
                ErrorCode::BadRequest,
                format!("cannot build the upstream URL: {e}"),
            )
        })?;
        let caller_version = parts.version;
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        let trusted = self.is_trusted(out.peer.addr.ip());
        set_forwarded(&mut headers, parts.uri.authority(), &out.peer, trusted);
        // The caller's credential and identity claims stay here; upstreams learn who called
        // from the gateway's own headers.
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-client-id");
        headers.remove("x-profile-id");
        let claimed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                k.as_str().starts_with(IDENTITY_PREFIX)
                    || (k.as_str().contains('_') && is_gateway_owned(k.as_str()))
            })
            .cloned()
            .collect();
        for name in claimed {
            headers.remove(name);
        }
        for (name, value) in out.identity {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(X_REQUEST_ID.clone(), out.request_id.clone());
        headers.insert(header::HOST, out.target.host_header());
        for (name, value) in out.headers {
            headers.insert(name.clone(), value.clone());
        }
        let mut request = Request::new(body);
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;

        let timeout = out.timeout.unwrap_or(self.response_timeout);
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => {
                return Err(GatewayError::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "the upstream did not answer within {}",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(response)) => response,
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // Answer in the caller's protocol, whatever the upstream spoke.
        parts.version = caller_version;
        Ok(Response::from_parts(
            parts,
            body.map_err(|e| -> crate::body::BoxError { Box::new(e) })
                .boxed(),
        ))
    }
}

/// A client for the gateway's own small requests (key sets, tokens): HTTP/1.1 over plain or
/// TLS connections with a connect timeout.
pub type ControlClient = Client<HttpsConnector<HttpConnector>, http_body_util::Full<bytes::Bytes>>;

/// Builds a [`ControlClient`].
pub fn control_client(tls: rustls::ClientConfig, connect_timeout: Duration) -> ControlClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The TLS settings for the gateway's outgoing connections (upstreams, identity providers):
/// the public web roots plus any extra CA certificates.
pub fn client_tls(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        // A certificate the store cannot use is skipped, as other TLS clients do.
        if let Err(e) = roots.add(cert.clone()) {
            tracing::warn!(error = %e, "skipping an unusable CA certificate");
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An address in `X-Forwarded-For`: `203.0.113.9`, `203.0.113.9:51234`, `2001:db8::1` or
/// `[2001:db8::1]:443`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest
            .split_once(']')?
            .0
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    let (host, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Whether a caller's header is one the gateway removes or sets itself, counting `_` as `-`:
/// servers that map headers to variables (CGI, WSGI, PHP) read `X_Portcullis_Client` as
/// `X-Portcullis-Client`.
fn is_gateway_owned(name: &str) -> bool {
    let dashed = name.replace('_', "-");
    dashed.starts_with(IDENTITY_PREFIX)
        || CLIENT_CLAIMS.contains(&dashed.as_str())
        || PATH_OVERRIDES.contains(&dashed.as_str())
        || matches!(
            dashed.as_str(),
            "authorization" | "x-client-id" | "x-profile-id" | "x-request-id"
        )
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Sets `X-Forwarded-For`/`-Proto`/`-Host` from what this gateway saw. A trusted proxy's
/// headers are kept, its address appended to `X-Forwarded-For`; anyone else's are discarded.
fn set_forwarded(
    headers: &mut HeaderMap,
    authority: Option<&Authority>,
    peer: &Peer,
    trusted: bool,
) {
    for name in PATH_OVERRIDES {
        headers.remove(name);
    }
    let prior_for: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    let host = headers
        .get(header::HOST)
        .cloned()
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let proto = HeaderValue::from_static(if peer.tls { "https" } else { "http" });
    let client_ip = peer.addr.ip().to_string();
    if trusted {
        let chain = prior_for
            .into_iter()
            .chain([client_ip])
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), proto);
        }
        if let (false, Some(h)) = (headers.contains_key(&X_FORWARDED_HOST), host) {
            headers.insert(X_FORWARDED_HOST.clone(), h);
        }
        return;
    }
    for name in CLIENT_CLAIMS {
        headers.remove(name);
    }
    if let Ok(v) = HeaderValue::from_str(&client_ip) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), proto);
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
}

/// Who caused a failed upstream call: the caller's body, the connection, or the upstream.
fn classify(err: &hyper_util::client::legacy::Error) -> GatewayError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(inbound) = e.downcast_ref::<InboundBodyError>() {
            return match inbound {
                InboundBodyError::TooLarge { .. } => {
                    GatewayError::new(ErrorCode::PayloadTooLarge, inbound.to_string())
                }
                InboundBodyError::Read(_) => {
                    GatewayError::new(ErrorCode::BadRequest, "the request body could not be read")
                }
            };
        }
        source = e.source();
    }
    if err.is_connect() {
        GatewayError::new(
            ErrorCode::UpstreamUnreachable,
            "the upstream could not be reached",
        )
    } else {
        GatewayError::new(ErrorCode::UpstreamError, "the upstream connection failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let t = UpstreamTarget::parse("https://pay.internal:8443/v2/").unwrap();
        assert_eq!(
            t.uri("/charges/1", Some("a=1")).unwrap().to_string(),
            "https://pay.internal:8443/v2/charges/1?a=1"
        );
        assert!(UpstreamTarget::parse("http://[::1]:8080/x").is_ok());
        let root = UpstreamTarget::parse("http://10.0.0.1").unwrap();
        assert_eq!(
            root.uri("/x", None).unwrap().to_string(),
            "http://10.0.0.1/x"
        );
        for bad in [
            "ftp://x",
            "/relative",
            "http://user:pw@host",
            "http://h/?q=1",
            "http://h/#x",
            "http://h:99999",
            "http://h:0",
            "http://h:abc",
            "http://h:",
            "http://[::1]:70000",
            "nonsense url",
        ] {
            assert!(UpstreamTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_addresses() {
        for (entry, want) in [
            ("203.0.113.9", Some("203.0.113.9")),
            (" 203.0.113.9:51234", Some("203.0.113.9")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:10.0.0.1", Some("10.0.0.1")),
            ("unknown", None),
            ("10.0.0.1:port", None),
        ] {
            assert_eq!(
                forwarded_ip(entry),
                want.map(|w| w.parse().unwrap()),
                "{entry}"
            );
        }
        assert!(is_gateway_owned("x_portcullis_client"));
        assert!(is_gateway_owned("x_forwarded_for"));
        assert!(!is_gateway_owned("x_custom_header"));
    }

    #[test]
    fn connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
