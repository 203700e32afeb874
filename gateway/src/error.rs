//! The error catalogue: every reason the gateway refuses or fails a request, with its stable
//! code, HTTP status and JSON body. Codes are API: never rename one. docs/errors.md lists them
//! all (a test keeps the two in step).

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{Body, json_response};

/// A stable reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed: an unsafe or undecodable path, an unreadable body.
    BadRequest,
    /// No published operation matches the path. Says nothing about what does exist.
    RouteNotFound,
    /// The path matches an operation, but not with this method. Carries `Allow`.
    MethodNotAllowed,
    /// The request body exceeds the configured limit.
    PayloadTooLarge,
    /// The request head (path and headers) exceeds the configured limit.
    HeadersTooLarge,
    /// No credential was presented. Carries `WWW-Authenticate`.
    Unauthenticated,
    /// A credential was presented but does not establish a caller: unknown, wrong, expired,
    /// revoked, or contradicted by `X-Client-ID`/`X-Profile-ID`. One answer for all of these,
    /// so a caller learns nothing about which clients or profiles exist.
    InvalidCredential,
    /// The caller's client is deactivated.
    ClientInactive,
    /// The caller's profile is deactivated or past its expiry.
    ProfileInactive,
    /// The caller's source address is not in the profile's allowlist.
    IpNotAllowed,
    /// The profile is not granted this collection (or the collection is not offered in the
    /// profile's environment).
    ProductNotGranted,
    /// The caller's identity provider cannot be reached to verify its token (and no keys are
    /// cached). The platform's fault, not the caller's.
    IdentityUnavailable,
    /// The operation requires scopes the caller does not hold. Carries `WWW-Authenticate`
    /// with `error="insufficient_scope"` and the required scopes.
    InsufficientScope,
    /// A rate limit of the caller's (or the product's) policy is spent for now. Carries
    /// `Retry-After`, `RateLimit-Policy` and `RateLimit`.
    RateLimited,
    /// A calendar quota (day, week, month) is spent until its window ends. Carries
    /// `Retry-After`, `RateLimit-Policy` and `RateLimit`.
    QuotaExhausted,
    /// The limiter cannot answer and the policy fails closed (or names a policy the limiter
    /// does not have). The platform's fault, not the caller's limit.
    PlatformDegraded,
    /// The node cannot keep request records right now and the operator chose to refuse traffic
    /// then (`--audit-mode refuse`).
    AuditUnavailable,
    /// The gateway could not connect to the upstream.
    UpstreamUnreachable,
    /// The upstream did not answer within the configured time.
    UpstreamTimeout,
    /// The upstream connection failed after it was established (reset, malformed response).
    UpstreamError,
    /// The gateway could not obtain its own credential for the upstream (the OAuth2 token
    /// endpoint failed, or the identity assertion could not be signed).
    UpstreamCredentialUnavailable,
    /// The collection's upstream settings cannot be used on this node (e.g. a header refers to
    /// an environment variable that is not set).
    UpstreamMisconfigured,
    /// A browser's `Origin` is not allowed to call the MCP endpoint (DNS-rebinding protection).
    OriginNotAllowed,
    /// The MCP session id is unknown, expired, or belongs to another profile.
    SessionNotFound,
    /// The client does not accept a JSON answer.
    NotAcceptable,
    /// The request body is not of a media type the endpoint takes (MCP: JSON).
    UnsupportedMediaType,
    /// Management API: the operator is known, but none of its roles allows the request.
    PermissionDenied,
    /// Management API: the request body is not JSON of the expected shape, or its values are
    /// invalid; the message names the fields.
    InvalidBody,
    /// Management API: the object exists already, or the change conflicts with what is stored.
    Conflict,
    /// Management API: `If-Match` names a version of the object that is no longer stored.
    PreconditionFailed,
}

impl ErrorCode {
    /// Every code, in catalogue order.
    pub const ALL: [ErrorCode; 30] = [
        ErrorCode::BadRequest,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::HeadersTooLarge,
        ErrorCode::Unauthenticated,
        ErrorCode::InvalidCredential,
        ErrorCode::IdentityUnavailable,
        ErrorCode::ClientInactive,
        ErrorCode::ProfileInactive,
        ErrorCode::IpNotAllowed,
        ErrorCode::ProductNotGranted,
        ErrorCode::InsufficientScope,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExhausted,
        ErrorCode::PlatformDegraded,
        ErrorCode::AuditUnavailable,
        ErrorCode::UpstreamUnreachable,
        ErrorCode::UpstreamTimeout,
        ErrorCode::UpstreamError,
        ErrorCode::UpstreamCredentialUnavailable,
        ErrorCode::UpstreamMisconfigured,
        ErrorCode::OriginNotAllowed,
        ErrorCode::SessionNotFound,
        ErrorCode::NotAcceptable,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PermissionDenied,
        ErrorCode::InvalidBody,
        ErrorCode::Conflict,
        ErrorCode::PreconditionFailed,
    ];

    /// The code as it appears in bodies, logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidCredential => "invalid_credential",
            ErrorCode::IdentityUnavailable => "identity_unavailable",
            ErrorCode::ClientInactive => "client_inactive",
            ErrorCode::ProfileInactive => "profile_inactive",
            ErrorCode::IpNotAllowed => "ip_not_allowed",
            ErrorCode::ProductNotGranted => "product_not_granted",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExhausted => "quota_exhausted",
            ErrorCode::PlatformDegraded => "platform_degraded",
            ErrorCode::AuditUnavailable => "audit_unavailable",
            ErrorCode::UpstreamUnreachable => "upstream_unreachable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::UpstreamCredentialUnavailable => "upstream_credential_unavailable",
            ErrorCode::UpstreamMisconfigured => "upstream_misconfigured",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::NotAcceptable => "not_acceptable",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PreconditionFailed => "precondition_failed",
        }
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::RouteNotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::Unauthenticated | ErrorCode::InvalidCredential => StatusCode::UNAUTHORIZED,
            ErrorCode::IdentityUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ClientInactive
            | ErrorCode::ProfileInactive
            | ErrorCode::IpNotAllowed
            | ErrorCode::ProductNotGranted
            | ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited | ErrorCode::QuotaExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::PlatformDegraded | ErrorCode::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::UpstreamError => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamCredentialUnavailable => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamMisconfigured => StatusCode::BAD_GATEWAY,
            ErrorCode::OriginNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::SessionNotFound => StatusCode::NOT_FOUND,
            ErrorCode::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::InvalidBody => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        }
    }
}

/// A refusal or failure, ready to be answered.
#[derive(Debug)]
pub struct GatewayError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// Headers the answer carries, e.g. `Allow` or `WWW-Authenticate`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The response for this error: the catalogue's status and the one JSON body shape,
    /// `{"error":{"code","message","request_id"}}`.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let body = serde_json::json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "request_id": request_id,
            }
        });
        let mut response = json_response(self.code.status(), &body);
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_documented() {
        let doc = include_str!("../../docs/errors.md");
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(
                seen.insert(code.as_str()),
                "duplicate code {}",
                code.as_str()
            );
            let row = format!("| `{}` | {} |", code.as_str(), code.status().as_u16());
            assert!(doc.contains(&row), "docs/errors.md lacks the row {row}");
        }
    }
}
