//! Cluster tests: one test binary, a module per area. Each test starts real `shoal` processes
//! on loopback with its own ports and data directory ([`cluster_tests::harness`]), or checks
//! the deployment files under `deploy/`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use cluster_tests::harness::{Cluster, ClusterSpec};

mod chat;
mod chat_ws;
mod cli;
mod counters;
mod crash;
mod deploy;
mod k8s;
mod objects;
mod observe;
mod payments;
mod placement;
mod raft;
mod ratelimit;
mod supervisor;
mod transport;
mod urls;
mod users;

/// The node binary cargo built for these tests (only test targets see its path).
const BIN: &str = env!("CARGO_BIN_EXE_shoal-node");

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// The root of the repository (deployment files, example configs).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// [`cluster_tests::harness::formed`] with this build's node binary.
async fn formed(spec: &ClusterSpec) -> Result<Cluster> {
    cluster_tests::harness::formed(bin(), spec).await
}

/// [`cluster_tests::api::led`] with this build's node binary.
async fn led(spec: &ClusterSpec) -> Result<Cluster> {
    cluster_tests::api::led(bin(), spec).await
}
