//! The error every policy's parameters are checked with (its own module, so
//! that the policies and the configuration that builds them do not depend
//! on each other).

/// Error from choosing or validating a policy configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No policy has this name.
    #[error("unknown policy {name:?}; known: follow, fast, classic, classic-deployed, classic-defaults, static, vpa")]
    UnknownPolicy {
        /// The name asked for.
        name: String,
    },
    /// A parameter is out of its valid range.
    #[error("policy {policy}: parameter `{field}` = {value} is invalid: {expected}")]
    InvalidParameter {
        /// Which policy.
        policy: &'static str,
        /// Which parameter (dotted path).
        field: String,
        /// The value given.
        value: String,
        /// What would be valid.
        expected: &'static str,
    },
}

/// Fail with [`ConfigError::InvalidParameter`] unless `ok`.
pub(crate) fn check(
    policy: &'static str,
    field: impl Into<String>,
    value: impl ToString,
    ok: bool,
    expected: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidParameter { policy, field: field.into(), value: value.to_string(), expected })
    }
}
