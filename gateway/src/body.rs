//! Body types shared by the data plane: one boxed body for everything the gateway sends, and
//! the inbound request body with its size limit and errors that say who caused them.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};

/// Any error a body may produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request sent upstream and every response sent to a caller.
pub type Body = BoxBody<Bytes, BoxError>;

/// Why the caller's request body could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum InboundBodyError {
    #[error("the request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    Read(BoxError),
}

/// Wraps a caller's body so that it streams through unbuffered but fails with
/// [`InboundBodyError::TooLarge`] once more than `limit` bytes have passed.
pub fn limit_inbound<B>(body: B, limit: usize) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    Limited::new(body, limit)
        .map_err(move |e| -> BoxError {
            if e.is::<http_body_util::LengthLimitError>() {
                Box::new(InboundBodyError::TooLarge { limit })
            } else {
                Box::new(InboundBodyError::Read(e))
            }
        })
        .boxed()
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A complete JSON response.
pub fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<Body> {
    // Only maps with non-text keys fail to serialise; no answer has one.
    let bytes = serde_json::to_vec(value).expect("answers serialise to JSON");
    let mut response = Response::new(
        Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Why a body could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("the body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body could not be read: {0}")]
    Read(BoxError),
}

/// Reads a whole body into memory, refusing it once it passes `limit` bytes.
pub async fn collect_limited(mut body: Body, limit: usize) -> Result<Bytes, CollectError> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CollectError::Read)?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err(CollectError::TooLarge { limit });
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}
