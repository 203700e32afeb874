//! Configuration files: reading YAML or JSON into the model ([`crate::model::Config`]) and
//! validating it as a whole. A file with any error is refused entirely, with line and field
//! level messages, before anything is applied.

pub mod env_ref;
mod validate;

use std::fmt;
use std::path::Path;

pub use self::validate::{gateway_owned_parameter, validate, validate_in};
use crate::model::Config;

/// The file formats `apply` and `validate` read and `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// The format implied by a file name: `.json` is JSON, anything else YAML.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// One problem at one place in a configuration, e.g.
/// `collections[0].operations[2].path: must start with '/'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The text is not well-formed, or does not have the model's shape.
    #[error("{0}")]
    Syntax(String),
    /// Well-formed, but inconsistent: every problem found, each with its field path.
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    Invalid(Vec<FieldError>),
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let config = read_file(path)?;
    validate(&config).map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Reads a configuration file without validating it; for callers (like `apply`) that validate
/// it together with what is already stored.
pub fn read_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_unvalidated(&text, Format::from_path(path))
}

/// Parses and validates configuration text.
pub fn parse(text: &str, format: Format) -> Result<Config, ConfigError> {
    let config = parse_unvalidated(text, format)?;
    validate(&config).map_err(ConfigError::Invalid)?;
    Ok(config)
}

fn parse_unvalidated(text: &str, format: Format) -> Result<Config, ConfigError> {
    let config: Config = match format {
        Format::Yaml => {
            if text.trim().is_empty() {
                Config::default()
            } else {
                serde_saphyr::from_str(text).map_err(|e| {
                    let message = e.to_string();
                    ConfigError::Syntax(
                        message
                            .strip_prefix("error: ")
                            .map(str::to_owned)
                            .unwrap_or(message),
                    )
                })?
            }
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let inner = e.inner();
                ConfigError::Syntax(format!(
                    "line {} column {}: {}: {}",
                    inner.line(),
                    inner.column(),
                    e.path(),
                    inner
                ))
            })?
        }
    };
    Ok(config)
}

/// Renders a configuration in the given format; the output parses back to an equal value.
pub fn render(config: &Config, format: Format) -> String {
    match format {
        Format::Yaml => serde_saphyr::to_string(config).expect("the model always serializes"),
        Format::Json => {
            let mut text =
                serde_json::to_string_pretty(config).expect("the model always serializes");
            text.push('\n');
            text
        }
    }
}
