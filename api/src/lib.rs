//! What the agent, the aggregator and the CLI share at their process
//! boundaries: the API error body ([`error`]), container names ([`names`]),
//! serving a router with limits and bearer auth ([`serve`]), process
//! set-up ([`process`]), query strings ([`query`]) and configuration files ([`config`]).
pub mod config;
pub mod error;
pub mod names;
pub mod process;
pub mod query;
pub mod serve;
