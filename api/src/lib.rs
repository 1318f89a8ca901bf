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
pub mod wire;
