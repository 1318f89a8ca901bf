//! What the agent, the aggregator and the CLI share at their process
//! boundaries: the API error body ([`error`]), container names ([`names`]),
//! serving a router with limits and bearer auth ([`serve`]), process
//! set-up ([`process`]), query strings ([`query`]), configuration files
//! ([`config`]) and the agent's API as typed data ([`wire`]).
pub mod config;
pub mod error;
pub mod names;
pub mod process;
pub mod query;
pub mod serve;
pub mod tls;
pub mod wire;

/// Wall-clock time, ms since the Unix epoch (0 before it): the one clock of
/// samples, events and history.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
