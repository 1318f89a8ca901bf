//! cgroupfs: where the hierarchies are, reading a container's files,
//! discovering containers, and mirroring v1-only cgroups into v2.
pub mod discover;
pub mod layout;
pub mod mirror;
pub mod parse;
pub mod reader;
pub mod writer;
