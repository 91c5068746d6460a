//! Mutual TLS for the peer transport: rustls with the ring provider, TLS 1.3 only, both sides
//! verified against the cluster CA. The peer's node id comes from its certificate subject.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::NodeId;
use crate::config::{PeerSection, TlsSection};

/// ALPN protocol id; the suffix is the transport protocol version.
pub const ALPN: &[u8] = b"shoal/1";

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {path}: {reason}")]
    Load {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// rustls refused the configuration (e.g. key does not match certificate).
    #[error("TLS configuration rejected: {0}")]
    Config(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("TLS client verifier rejected: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The certificate does not name a node (`CN=node-N`).
    #[error("certificate does not name a node id: {reason}")]
    NoNodeId {
        /// What was wrong.
        reason: String,
    },
    /// rustls configuration unusable for QUIC.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
}

/// A node's TLS material, loaded once at startup.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The cluster CA.
    pub ca: CertificateDer<'static>,
    /// This node's certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: Arc<PrivateKeyDer<'static>>,
    /// The node id named by the certificate.
    pub node_id: NodeId,
}

impl Identity {
    /// Loads the files named in `[tls]`.
    pub fn load(tls: &TlsSection) -> Result<Self, TlsError> {
        let ca = load_certs(&tls.ca_cert, "the CA certificate")?
            .into_iter()
            .next()
            .ok_or_else(|| load_err("the CA certificate", &tls.ca_cert, "no certificate in file"))?;
        let chain = load_certs(&tls.cert, "the node certificate")?;
        let first =
            chain.first().ok_or_else(|| load_err("the node certificate", &tls.cert, "no certificate in file"))?;
        let node_id = node_id_of(first)?;
        let key = PrivateKeyDer::from_pem_file(&tls.key)
            .map_err(|e| load_err("the private key", &tls.key, &e.to_string()))?;
        Ok(Self { ca, chain, key: Arc::new(key), node_id })
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(roots)
    }

    /// The QUIC server side: requires a client certificate from the cluster CA.
    pub fn server_config(&self, peer: &PeerSection) -> Result<quinn::ServerConfig, TlsError> {
        let provider = provider();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport_config(peer)?);
        Ok(config)
    }

    /// The QUIC client side: presents this node's certificate, trusts only the cluster CA.
    pub fn client_config(&self, peer: &PeerSection) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport_config(peer)?);
        Ok(config)
    }

    /// The stateless-reset key: derived from the node's private key, so it is the same after a
    /// restart and a peer's stale connection is reset on its first packet instead of idling out.
    pub fn reset_key(&self) -> ring::hmac::Key {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"shoal stateless reset key v1");
        ctx.update(self.key.secret_der());
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ctx.finish().as_ref())
    }
}

impl Identity {
    /// The key of the connection-id generator. quinn validates incoming connection ids against
    /// it before answering with a stateless reset, so it must survive restarts like the reset key.
    pub fn cid_key(&self) -> u64 {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"shoal connection id key v1");
        ctx.update(self.key.secret_der());
        let digest = ctx.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_le_bytes(first)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport_config(peer: &PeerSection) -> Result<Arc<quinn::TransportConfig>, TlsError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(peer.idle_timeout)
        .map_err(|_| TlsError::Quic("peer.idle_timeout is too long".into()))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(peer.keep_alive_interval));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(peer.max_in_flight_per_peer));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // Loopback clusters see tiny RTTs; start the estimate low so the first probe timeouts are sane.
    t.initial_rtt(Duration::from_millis(10));
    Ok(Arc::new(t))
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| load_err(what, path, &e.to_string()))?;
    iter.collect::<Result<Vec<_>, _>>().map_err(|e| load_err(what, path, &e.to_string()))
}

fn load_err(what: &'static str, path: &Path, reason: &str) -> TlsError {
    TlsError::Load { what, path: path.display().to_string(), reason: reason.to_string() }
}

/// Reads the node id from a certificate whose subject common name is `node-N`.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| TlsError::NoNodeId { reason: e.to_string() })?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| TlsError::NoNodeId { reason: "no common name".into() })?;
    cn.strip_prefix("node-")
        .and_then(|n| n.parse::<NodeId>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| TlsError::NoNodeId { reason: format!("common name `{cn}` is not node-N") })
}

/// The node id of the other end of an established connection, from its certificate.
pub fn peer_node_id(conn: &quinn::Connection) -> Result<NodeId, TlsError> {
    let identity =
        conn.peer_identity().ok_or_else(|| TlsError::NoNodeId { reason: "peer presented no certificate".into() })?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoNodeId { reason: "unexpected peer identity type".into() })?;
    let first = chain.first().ok_or_else(|| TlsError::NoNodeId { reason: "empty certificate chain".into() })?;
    node_id_of(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_the_node_and_reset_key_is_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::certs::init(dir.path(), 2).expect("certs");
        let tls = |n: u64| TlsSection {
            ca_cert: dir.path().join("ca.pem"),
            cert: dir.path().join(format!("node-{n}.pem")),
            key: dir.path().join(format!("node-{n}.key")),
        };
        let a = Identity::load(&tls(2)).expect("load");
        assert_eq!(a.node_id, 2);
        let again = Identity::load(&tls(2)).expect("load");
        let tag = |id: &Identity| ring::hmac::sign(&id.reset_key(), b"cid").as_ref().to_vec();
        assert_eq!(tag(&a), tag(&again));
        assert_ne!(tag(&a), tag(&Identity::load(&tls(1)).expect("load")));
        a.server_config(&PeerSection::default()).expect("server config");
        a.client_config(&PeerSection::default()).expect("client config");
    }

    #[test]
    fn missing_files_name_the_path() {
        let err = Identity::load(&TlsSection {
            ca_cert: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/n.pem".into(),
            key: "/nonexistent/n.key".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
