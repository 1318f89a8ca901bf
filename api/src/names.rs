//! Container names appear in URLs and metrics labels: keep them to a safe
//! alphabet.

/// Checks a container name: 1-128 characters from `[A-Za-z0-9._:@-]`.
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("name {name:?} must be 1 to 128 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("name {name:?} is not addressable in a URL"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._:@-".contains(*c))) {
        return Err(format!("name {name:?} contains {c:?}; allowed: letters, digits and . _ : @ -"));
    }
    Ok(())
}

/// Replaces characters outside the allowed alphabet with `_` (discovered
/// names come from directory names, which may hold anything).
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._:@-".contains(c) { c } else { '_' })
        .take(128)
        .collect();
    if s.is_empty() { "_".to_owned() } else { s }
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sanitized() {
        assert_eq!(super::sanitize("a b/c"), "a_b_c");
        assert_eq!(super::sanitize(""), "_");
    }

    #[test]
    fn names() {
        assert!(super::validate("web-1.service").is_ok());
        assert!(super::validate("").is_err());
        assert!(super::validate("a/b").is_err());
        assert!(super::validate("..").is_err());
        assert!(super::validate(&"x".repeat(129)).is_err());
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(super::escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
