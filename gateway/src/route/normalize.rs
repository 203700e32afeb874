//! Request path normalisation: the one place that turns the raw, percent-encoded request path
//! into the canonical decoded path that routing sees. Tricks that could make a path match an
//! operation it should not, or escape the target path upstream, are refused here.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Why a request path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the request path must start with '/'")]
    NotOriginForm,
    #[error("the request path has a malformed percent-encoding")]
    BadEncoding,
    #[error("the request path is not valid UTF-8 once decoded")]
    NotUtf8,
    #[error("the request path contains an encoded '/' or a '\\'")]
    EncodedSeparator,
    #[error("the request path contains a control character")]
    ControlChar,
    #[error("the request path contains a '.' or '..' segment")]
    DotSegment,
}

/// Returns the canonical form of a raw request path: each segment percent-decoded, empty
/// segments (`//`) collapsed, a trailing `/` kept. Refuses encoded separators (`%2F`, `%5C`),
/// backslashes, dot segments (`.`, `..`, `%2e%2e`), control characters, malformed escapes and
/// invalid UTF-8. Because decoded segments never contain `/`, the result can be split on `/`
/// to recover them.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotOriginForm)?;
    let mut out = String::with_capacity(raw.len());
    let trailing_slash = rest.ends_with('/');
    for part in rest.split('/').filter(|p| !p.is_empty()) {
        let segment = decode_segment(part)?;
        out.push('/');
        out.push_str(&segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

fn decode_segment(raw: &str) -> Result<Cow<'_, str>, PathError> {
    check_escapes(raw)?;
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?;
    if decoded.contains(['/', '\\']) {
        return Err(PathError::EncodedSeparator);
    }
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlChar);
    }
    // `..;x` is `..` to servers that strip path parameters (Tomcat, Spring).
    let before_params = decoded.split(';').next().unwrap_or_default();
    if before_params == "." || before_params == ".." {
        return Err(PathError::DotSegment);
    }
    Ok(decoded)
}

/// `percent_decode_str` passes malformed escapes through unchanged; refuse them instead, so
/// `%zz` or a dangling `%` cannot mean one thing here and another upstream.
fn check_escapes(raw: &str) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(PathError::BadEncoding);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("/", "/"),
            ("//", "/"),
            ("/a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("//a///b/", "/a/b/"),
            ("/a%20b/c", "/a b/c"),
            ("/%7Euser", "/~user"),
            ("/caf%C3%A9", "/café"),
            ("/a/.b/..c", "/a/.b/..c"),
            ("/a/b;v=1", "/a/b;v=1"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_tricks() {
        use PathError::*;
        let cases = [
            ("a/b", NotOriginForm),
            ("*", NotOriginForm),
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/%2e%2e/b", DotSegment),
            ("/a/%2E%2e", DotSegment),
            ("/a/.%2e/b", DotSegment),
            ("/a/..;/b", DotSegment),
            ("/a/..%3B/b", DotSegment),
            ("/a/.;x=1/b", DotSegment),
            ("/a%2fb", EncodedSeparator),
            ("/a%2F..%2Fb", EncodedSeparator),
            ("/a%5cb", EncodedSeparator),
            ("/a\\b", EncodedSeparator),
            ("/a%00b", ControlChar),
            ("/a%0ab", ControlChar),
            ("/a%zz", BadEncoding),
            ("/a%2", BadEncoding),
            ("/a%", BadEncoding),
            ("/%ff%fe", NotUtf8),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), Err(want), "{raw}");
        }
    }
}
