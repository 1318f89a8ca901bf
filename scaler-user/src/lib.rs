//! The scaler agent (sampling and acting on limits), its HTTP API and the
//! one `scaler` binary, which also runs the aggregator (`scaler-aggregator`)
//! and the client commands (`scaler-cli`); what they share at their
//! boundaries is in `scaler-api`.
//!
//! Layout: [`ebpf`] loads programs and reads maps; [`cgroup`] reads (and
//! later writes) cgroupfs, rooted at a [`cgroup::layout::Layout`] so tests
//! use fake trees; [`sample`] turns readings into rates (pure); [`agent`] runs
//! the loop; [`http`] serves it.
pub mod agent;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod ebpf;
pub mod engine;
pub mod host;
pub mod http;
pub mod kfile;
pub mod manage;
pub mod published;
pub mod sample;
pub mod topology;
