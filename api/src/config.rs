//! What every configuration file shares: TOML read into a typed struct,
//! errors in one line that name the file, the place or the field.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    /// One line: where and what (toml's own message spans several, with
    /// the source line drawn under it).
    #[error("config {path}, line {line}, column {column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("config field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

/// A validation error naming the field.
pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

/// Reads a TOML file into `T` (the agent's or the aggregator's config).
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
    toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))
}

/// A TOML error as one line with its position.
pub fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map_or(0, |s| s.start.min(text.len()));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let message = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    ConfigError::Parse { path: path.into(), line, column, message }
}
