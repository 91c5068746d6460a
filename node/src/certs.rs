//! The cluster's certificate authority: `shoal certs init` and the files it writes.
//!
//! Layout of a certificate directory: `ca.pem`, `ca.key`, and `node-N.pem` / `node-N.key` per node.
//! Node certificates name the node in their subject (`CN=node-N`) and carry two DNS names:
//! `node-N.shoal` (dialled when the peer's id is known) and `shoal` (dialled when joining through
//! an address). Private keys are written with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::NodeId;

/// The DNS name every node certificate carries besides its own.
pub const CLUSTER_SERVER_NAME: &str = "shoal";

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// rcgen refused the parameters or an existing file.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// `--nodes` was 0.
    #[error("--nodes must be at least 1")]
    NoNodes,
}

/// The DNS name a node's certificate is issued for.
pub fn node_server_name(id: NodeId) -> String {
    format!("node-{id}.shoal")
}

/// Paths of one node's certificate and key inside a certificate directory.
pub fn node_files(dir: &Path, id: NodeId) -> (PathBuf, PathBuf) {
    (dir.join(format!("node-{id}.pem")), dir.join(format!("node-{id}.key")))
}

/// What [`init`] did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// A new CA was created (false: the existing one was reused).
    pub created_ca: bool,
    /// Node ids that got a new certificate.
    pub created_nodes: Vec<NodeId>,
    /// Node ids whose certificate already existed and was kept.
    pub kept_nodes: Vec<NodeId>,
}

/// Makes (or completes) a certificate directory for nodes `1..=nodes`.
///
/// An existing CA is reused and existing node certificates are kept, so running it again is safe
/// and `--nodes` can grow a cluster.
pub fn init(dir: &Path, nodes: u64) -> Result<InitReport, CertError> {
    if nodes == 0 {
        return Err(CertError::NoNodes);
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.into(), source })?;
    let mut report = InitReport::default();
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let (issuer, created) = if ca_cert.exists() && ca_key.exists() {
        let key = KeyPair::from_pem(&read(&ca_key)?)?;
        (Issuer::from_ca_cert_pem(&read(&ca_cert)?, key)?, false)
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "Shoal cluster CA");
        params.distinguished_name.push(DnType::OrganizationName, "shoal");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        write_private(&ca_key, key.serialize_pem().as_bytes())?;
        write_public(&ca_cert, cert.pem().as_bytes())?;
        (Issuer::new(params, key), true)
    };
    report.created_ca = created;
    for id in 1..=nodes {
        let (cert_path, key_path) = node_files(dir, id);
        if cert_path.exists() && key_path.exists() {
            report.kept_nodes.push(id);
            continue;
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![node_server_name(id), CLUSTER_SERVER_NAME.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, format!("node-{id}"));
        params.distinguished_name.push(DnType::OrganizationName, "shoal");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_public(&cert_path, cert.pem().as_bytes())?;
        report.created_nodes.push(id);
    }
    Ok(report)
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io { path: path.into(), source })
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    std::fs::write(path, bytes).map_err(|source| CertError::Io { path: path.into(), source })
}

/// Writes a private key readable by its owner only (created 0600, never world-readable).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    let io = |source| CertError::Io { path: path.into(), source };
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_writes_ca_and_node_files_with_private_keys_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = init(dir.path(), 3).expect("init");
        assert!(report.created_ca);
        assert_eq!(report.created_nodes, vec![1, 2, 3]);
        for name in ["ca.key", "node-1.key", "node-2.key", "node-3.key"] {
            let mode = std::fs::metadata(dir.path().join(name)).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        for name in ["ca.pem", "node-1.pem", "node-3.pem"] {
            assert!(dir.path().join(name).exists(), "{name}");
        }
    }

    #[test]
    fn init_again_reuses_the_ca_and_adds_nodes() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), 2).expect("init");
        let ca_before = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        let report = init(dir.path(), 4).expect("again");
        assert!(!report.created_ca);
        assert_eq!(report.kept_nodes, vec![1, 2]);
        assert_eq!(report.created_nodes, vec![3, 4]);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).expect("ca"), ca_before);
    }

    #[test]
    fn zero_nodes_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(init(dir.path(), 0), Err(CertError::NoNodes)));
    }
}
