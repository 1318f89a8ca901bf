//! A JSON HTTP client bound to one base URL: what the tests use to talk to
//! an agent or an aggregator over its real socket.

use std::time::Duration;

use serde_json::Value;

pub struct Api {
    pub url: String,
    http: reqwest::blocking::Client,
}

impl Api {
    pub fn new(url: String, timeout: Duration) -> Self {
        Self { url, http: reqwest::blocking::Client::builder().timeout(timeout).build().unwrap() }
    }

    /// Does `/healthz` answer with a success?
    pub fn healthy(&self) -> bool {
        self.http.get(format!("{}/healthz", self.url)).send().is_ok_and(|r| r.status().is_success())
    }

    /// GET `path`: status and JSON body (`Null` if not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None)
    }

    /// GET `path` as text.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{}", self.url, path)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap_or_default())
    }

    /// Sends a request with an optional JSON body.
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{}", self.url, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }
}
