//! Shoal: identical nodes that together serve the classic system-design services.
//!
//! The crate is organised one folder per subsystem. [`supervisor`] is the one place that starts
//! and wires them; [`node::run`] is the entry point `shoal start` and the tests call.

pub mod certs;
pub mod cli;
pub mod config;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod raft;
pub mod router;
pub mod services;
pub mod storage;
pub mod supervisor;
pub mod transport;
pub mod util;

/// A node's identity in the cluster. Taken from its certificate, never from a message.
pub type NodeId = u64;
