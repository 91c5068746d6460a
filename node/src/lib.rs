//! Shoal: identical nodes that together serve the classic system-design services.
//!
//! The crate is organised one folder per subsystem. [`supervisor`] is the one place that starts
//! and wires them; [`node::run`] is the entry point `shoal start` and the tests call.

/// mimalloc instead of glibc's allocator: a node allocates and frees many small buffers per
/// request on two runtime threads, and glibc's malloc (arena locks, chunk consolidation) took
/// about 15 % of a node's CPU under load (see `docs/design.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
pub mod sandbox;
pub mod services;
pub mod storage;
pub mod supervisor;
pub mod transport;
pub mod util;

/// A node's identity in the cluster. Taken from its certificate, never from a message.
pub type NodeId = u64;
