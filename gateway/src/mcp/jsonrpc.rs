//! JSON-RPC 2.0 messages as MCP uses them: one message per HTTP request (no batches), ids that
//! are strings or numbers, and the standard error codes.

use serde_json::{Map, Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Valid JSON that is not a JSON-RPC request, notification or response.
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Bad parameters, an unknown tool, an unsupported protocol version.
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A message a client sent.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// Expects a response.
    Request {
        id: Value,
        method: String,
        params: Map<String, Value>,
    },
    /// Expects none.
    Notification {
        method: String,
        params: Map<String, Value>,
    },
    /// A response to a request of the server's (this server sends none).
    Response,
}

/// A JSON-RPC error object, and the id of the request it answers (null when the request's
/// id could not be read).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Reads one message. On failure, the error to answer and the request's id if it was
/// readable.
pub fn parse(body: &[u8]) -> Result<Incoming, (RpcError, Value)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        (
            RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
            Value::Null,
        )
    })?;
    let Value::Object(mut message) = value else {
        let what = if value.is_array() {
            "batches are not supported: send one JSON-RPC message per request"
        } else {
            "a JSON-RPC message is an object"
        };
        return Err((RpcError::new(INVALID_REQUEST, what), Value::Null));
    };
    let id = message.remove("id");
    let id_ok = matches!(&id, Some(Value::String(_) | Value::Number(_)));
    let reply_id = if id_ok {
        id.clone().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let invalid = |what: &str| (RpcError::new(INVALID_REQUEST, what), reply_id.clone());
    if message.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    if message.contains_key("result") || message.contains_key("error") {
        return if message.contains_key("method") {
            Err(invalid("a message cannot be both a request and a response"))
        } else {
            Ok(Incoming::Response)
        };
    }
    let method = match message.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err(invalid("\"method\" must be a string")),
    };
    let params = match message.remove("params") {
        None => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err((
                RpcError::new(INVALID_PARAMS, "\"params\" must be an object"),
                reply_id,
            ));
        }
    };
    match id {
        None => Ok(Incoming::Notification { method, params }),
        Some(Value::String(_) | Value::Number(_)) => Ok(Incoming::Request {
            id: id.expect("matched"),
            method,
            params,
        }),
        Some(_) => Err(invalid("\"id\" must be a string or a number")),
    }
}

/// A success response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response.
pub fn error(id: &Value, error: &RpcError) -> Value {
    let mut e = Map::new();
    e.insert("code".into(), error.code.into());
    e.insert("message".into(), error.message.clone().into());
    if let Some(data) = &error.data {
        e.insert("data".into(), data.clone());
    }
    json!({"jsonrpc": "2.0", "id": id, "error": e})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_notifications_and_responses() {
        let r = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"x"}}"#);
        assert!(
            matches!(r, Ok(Incoming::Request { id, method, params }) if id == json!(7) && method == "tools/list" && params["cursor"] == "x")
        );
        let n = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(matches!(n, Ok(Incoming::Notification { .. })));
        let resp = parse(br#"{"jsonrpc":"2.0","id":"s1","result":{}}"#);
        assert_eq!(resp, Ok(Incoming::Response));
    }

    #[test]
    fn refuses_what_is_not_one_message() {
        let cases: [(&[u8], i64, Value); 8] = [
            (b"{", PARSE_ERROR, Value::Null),
            (b"\xff", PARSE_ERROR, Value::Null),
            (b"[]", INVALID_REQUEST, Value::Null),
            (b"42", INVALID_REQUEST, Value::Null),
            (br#"{"id":1,"method":"ping"}"#, INVALID_REQUEST, json!(1)),
            (
                br#"{"jsonrpc":"2.0","id":2,"method":3}"#,
                INVALID_REQUEST,
                json!(2),
            ),
            (
                br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
            (
                br#"{"jsonrpc":"2.0","id":3,"method":"ping","params":[1]}"#,
                INVALID_PARAMS,
                json!(3),
            ),
        ];
        for (body, code, id) in cases {
            let (e, got) = parse(body).unwrap_err();
            assert_eq!(
                (e.code, got),
                (code, id),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
