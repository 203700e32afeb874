//! Path templates (`/charges/{id}`, `/files/*`): parsing, conversion to router patterns, and
//! expansion into an upstream path with every substituted value percent-encoded.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Characters escaped when a value is placed into one path segment: everything but RFC 3986
/// unreserved characters and the sub-delimiters that are safe in a segment. `/`, `?`, `#`, `%` and
/// `;` are always escaped, so a value can never add a segment, a query, a fragment or a path
/// parameter.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b';')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Name under which the router captures a wildcard's remainder; parameter names may not use it.
pub(crate) const WILDCARD_PARAM: &str = "__rest";

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    wildcard: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("must start with '/'")]
    NoLeadingSlash,
    #[error("empty segment (double or trailing '/')")]
    EmptySegment,
    #[error("'.' and '..' segments are not allowed")]
    DotSegment,
    #[error("'*' is only allowed as the whole last segment")]
    MisplacedWildcard,
    #[error("invalid parameter name in segment '{0}' (use {{name}} with letters, digits, '_')")]
    BadParam(String),
    #[error("parameter '{0}' appears twice")]
    DuplicateParam(String),
    #[error("invalid character {0:?} in literal segment (use only unencoded URL path characters)")]
    BadChar(char),
}

impl PathTemplate {
    /// Parses a template such as `/charges/{id}` or `/files/*`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let rest = text
            .strip_prefix('/')
            .ok_or(TemplateError::NoLeadingSlash)?;
        let mut segments = Vec::new();
        let mut wildcard = false;
        if rest.is_empty() {
            return Ok(Self { segments, wildcard });
        }
        let parts: Vec<&str> = rest.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            match *part {
                "" => return Err(TemplateError::EmptySegment),
                "." | ".." => return Err(TemplateError::DotSegment),
                "*" if last => wildcard = true,
                p if p.contains('*') => return Err(TemplateError::MisplacedWildcard),
                p if p.starts_with('{') || p.ends_with('}') => {
                    let name = p
                        .strip_prefix('{')
                        .and_then(|p| p.strip_suffix('}'))
                        .filter(|n| is_param_name(n))
                        .ok_or_else(|| TemplateError::BadParam(p.to_owned()))?;
                    if segments.contains(&Segment::Param(name.to_owned())) {
                        return Err(TemplateError::DuplicateParam(name.to_owned()));
                    }
                    segments.push(Segment::Param(name.to_owned()));
                }
                p => {
                    if let Some(c) = p.chars().find(|c| !is_literal_char(*c)) {
                        return Err(TemplateError::BadChar(c));
                    }
                    segments.push(Segment::Literal(p.to_owned()));
                }
            }
        }
        Ok(Self { segments, wildcard })
    }

    /// Whether the template ends in `/*`.
    pub fn has_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The names of the template's `{params}`, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The patterns to register with the router. A wildcard template matches its own prefix too
    /// (`/files/*` matches `/files`, `/files/` and `/files/a/b`), so it yields several patterns.
    pub(crate) fn router_patterns(&self) -> Vec<String> {
        let mut base = String::new();
        for segment in &self.segments {
            base.push('/');
            match segment {
                Segment::Literal(l) => base.push_str(l),
                Segment::Param(name) => {
                    base.push('{');
                    base.push_str(name);
                    base.push('}');
                }
            }
        }
        let prefix = if base.is_empty() { "/" } else { &base };
        if self.wildcard && base.is_empty() {
            vec!["/".to_owned(), format!("/{{*{WILDCARD_PARAM}}}")]
        } else if self.wildcard {
            vec![
                base.clone(),
                format!("{base}/"),
                format!("{base}/{{*{WILDCARD_PARAM}}}"),
            ]
        } else {
            vec![prefix.to_owned()]
        }
    }

    /// Builds a concrete path from this template. `param` gives each parameter's (decoded) value;
    /// `rest` is the (decoded, canonical) remainder matched by the request's wildcard: its
    /// segments are encoded one by one and a trailing `/` is kept. Every value is
    /// percent-encoded as one segment, so no value can change the path's shape.
    pub fn expand<'a>(&self, param: impl Fn(&str) -> Option<&'a str>, rest: &str) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(name) => {
                    let value = param(name).unwrap_or_default();
                    out.extend(utf8_percent_encode(value, SEGMENT));
                }
            }
        }
        if self.wildcard {
            for part in rest.split('/').filter(|p| !p.is_empty()) {
                out.push('/');
                out.extend(utf8_percent_encode(part, SEGMENT));
            }
            if rest.ends_with('/') {
                out.push('/');
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let patterns = self.router_patterns();
        let base = &patterns[0];
        match (self.wildcard, base.as_str()) {
            (true, "/") => f.write_str("/*"),
            (true, b) => write!(f, "{b}/*"),
            (false, b) => f.write_str(b),
        }
    }
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != WILDCARD_PARAM
}

/// Unencoded path characters (RFC 3986 `pchar` without `%`).
fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()+,;=:@".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_params_and_wildcards() {
        let t = PathTemplate::parse("/charges/{id}/refunds").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["id"]);
        assert_eq!(t.router_patterns(), ["/charges/{id}/refunds"]);
        let w = PathTemplate::parse("/files/*").unwrap();
        assert_eq!(
            w.router_patterns(),
            ["/files", "/files/", "/files/{*__rest}"]
        );
        let root = PathTemplate::parse("/*").unwrap();
        assert_eq!(root.router_patterns(), ["/", "/{*__rest}"]);
        assert_eq!(PathTemplate::parse("/").unwrap().router_patterns(), ["/"]);
        assert_eq!(w.to_string(), "/files/*");
        assert_eq!(root.to_string(), "/*");
    }

    #[test]
    fn refuses_malformed_templates() {
        use TemplateError::*;
        let cases = [
            ("charges", NoLeadingSlash),
            ("/a//b", EmptySegment),
            ("/a/", EmptySegment),
            ("/a/../b", DotSegment),
            ("/a/*/b", MisplacedWildcard),
            ("/a*", MisplacedWildcard),
            ("/{id", BadParam("{id".into())),
            ("/{1d}", BadParam("{1d}".into())),
            ("/{__rest}", BadParam("{__rest}".into())),
            ("/{id}/{id}", DuplicateParam("id".into())),
            ("/a b", BadChar(' ')),
            ("/a%2f", BadChar('%')),
        ];
        for (text, want) in cases {
            assert_eq!(PathTemplate::parse(text), Err(want), "{text}");
        }
    }

    #[test]
    fn expansion_encodes_values_as_single_segments() {
        let t = PathTemplate::parse("/v2/items/{id}/*").unwrap();
        let path = t.expand(|_| Some("a/../b?x#y;p"), "c d/..");
        assert_eq!(path, "/v2/items/a%2F..%2Fb%3Fx%23y%3Bp/c%20d/..");
        // `..` as a whole wildcard segment is refused before expansion (see normalize); the
        // encoder itself only guarantees one value stays one segment.
        assert_eq!(PathTemplate::parse("/").unwrap().expand(|_| None, ""), "/");
        let root = PathTemplate::parse("/*").unwrap();
        assert_eq!(root.expand(|_| None, "a/b"), "/a/b");
        assert_eq!(root.expand(|_| None, "a/b/"), "/a/b/");
        assert_eq!(root.expand(|_| None, ""), "/");
    }
}
