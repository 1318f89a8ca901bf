//! Kernel side driver: [`loader`] loads and attaches the programs and reads
//! the counter map; [`btf`] finds struct offsets the programs need.
mod attach;
pub mod batch;
pub mod btf;
pub mod loader;
pub mod memiter;
pub mod netlimit;
pub mod preflight;

pub use loader::{Kernel, LoadError, ProgramStat};
