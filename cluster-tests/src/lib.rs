//! Cluster tests and benchmarks for Shoal: a harness that runs real `shoal` processes.

pub mod api;
pub mod chat;
pub mod harness;
pub mod history;
pub mod sandbox;
pub mod skip;
