//! scaler's user space: the agent (sampling, and later acting on limits),
//! its HTTP API, and the client commands.
//!
//! Layout: [`ebpf`] loads programs and reads maps; [`cgroup`] reads (and
//! later writes) cgroupfs, rooted at a [`cgroup::layout::Layout`] so tests
//! use fake trees; [`sample`] turns readings into rates (pure); [`agent`] runs
//! the loop; [`http`] serves it.
pub mod agent;
pub mod aggregator;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod config;
pub mod ebpf;
pub mod host;
pub mod http;
pub mod manage;
pub mod names;
pub mod process;
pub mod published;
pub mod sample;
pub mod serve;
