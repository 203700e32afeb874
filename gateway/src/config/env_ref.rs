//! `${NAME}` references to the gateway process's environment inside configuration values
//! (upstream headers), so secrets stay out of the configuration and its exports.

/// A malformed or unresolvable reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvRefError {
    #[error("unterminated '${{' reference")]
    Unterminated,
    #[error("invalid variable name '{0}' (use letters, digits and '_')")]
    BadName(String),
    #[error("environment variable '{0}' is not set")]
    Missing(String),
}

/// Substitutes every `${NAME}` in `value` using `lookup`. A `$` not followed by `{` is literal.
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, EnvRefError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(EnvRefError::Unterminated)?;
        let name = &after[..end];
        if !is_variable_name(name) {
            return Err(EnvRefError::BadName(name.to_owned()));
        }
        out.push_str(&lookup(name).ok_or_else(|| EnvRefError::Missing(name.to_owned()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `name` is a portable environment variable name: letters, digits and `_`, not
/// starting with a digit.
pub fn is_variable_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variable names `value` refers to (well-formed references only).
pub fn references(value: &str) -> impl Iterator<Item = &str> {
    value
        .split("${")
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
        .filter(|name| is_variable_name(name))
}

/// Checks the syntax of every reference without resolving any.
pub fn check(value: &str) -> Result<(), EnvRefError> {
    expand(value, |_| Some(String::new())).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_and_reports() {
        let env = |n: &str| (n == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(expand("Bearer ${TOKEN}", env).unwrap(), "Bearer s3cret");
        assert_eq!(expand("cost: $5", env).unwrap(), "cost: $5");
        assert_eq!(
            expand("${NOPE}", env),
            Err(EnvRefError::Missing("NOPE".into()))
        );
        assert_eq!(expand("${TOKEN", env), Err(EnvRefError::Unterminated));
        assert_eq!(expand("${1X}", env), Err(EnvRefError::BadName("1X".into())));
        assert_eq!(
            expand("${A-B}", env),
            Err(EnvRefError::BadName("A-B".into()))
        );
    }
}
