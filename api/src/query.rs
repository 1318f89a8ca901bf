//! Query strings parsed by hand so every mistake is a 400 that names the
//! parameter (axum's `Query` rejection is plain text).

use std::collections::BTreeMap;

use crate::error::ApiError;

pub struct Query {
    params: BTreeMap<String, String>,
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    /// Parses `raw`, refusing parameters not in `allowed` and repeated ones.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut params = BTreeMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k), decode(v));
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_request(
                    &k,
                    format!("unknown query parameter {k:?}; allowed: {}", allowed.join(", ")),
                ));
            }
            if params.insert(k.clone(), v).is_some() {
                return Err(ApiError::bad_request(&k, format!("query parameter {k:?} given twice")));
            }
        }
        Ok(Self { params })
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// An unsigned integer parameter.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.str(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(key, format!("{key} must be a non-negative integer, got {v:?}")))
            })
            .transpose()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let q =
            Query::parse(Some("since_ms=10&limit=5&resource=disk%5Fread"), &["since_ms", "limit", "resource"]).unwrap();
        assert_eq!(q.u64("since_ms").unwrap(), Some(10));
        assert_eq!(q.str("resource"), Some("disk_read"));
        assert_eq!(q.u64("missing").unwrap(), None);
        let e = Query::parse(Some("bogus=1"), &["limit"]).err().unwrap();
        assert_eq!(e.field.as_deref(), Some("bogus"));
        let q = Query::parse(Some("limit=-3"), &["limit"]).unwrap();
        assert_eq!(q.u64("limit").unwrap_err().field.as_deref(), Some("limit"));
        assert!(Query::parse(Some("limit=1&limit=2"), &["limit"]).is_err());
        assert!(Query::parse(None, &[]).is_ok());
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
