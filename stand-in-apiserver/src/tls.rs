//! The stand-in's HTTPS identity. A pod reaches its API server the in-cluster way
//! (`KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's `ca.crt` and
//! `token`), which is HTTPS only; so a server an agent in a container talks to
//! has a CA made per server and a certificate for its address signed by it.

use std::{io, net::IpAddr, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A CA (its certificate is what clients trust) and the server's TLS side.
pub(super) struct Identity {
    /// The CA certificate, PEM: the service account's `ca.crt`.
    pub ca_pem: String,
    /// Accepts TLS connections with the server certificate.
    pub acceptor: TlsAcceptor,
}

fn other(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("stand-in TLS identity: {error}"))
}

/// A fresh CA and a certificate for `address` (and the in-cluster name
/// `kubernetes.default.svc`) that it signed.
pub(super) fn identity(address: IpAddr) -> io::Result<Identity> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "podwall stand-in API server CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(other)?)
        .map_err(other)?;
    let key = KeyPair::generate().map_err(other)?;
    let mut params = CertificateParams::new(vec![
        address.to_string(),
        "kubernetes.default.svc".to_string(),
    ])
    .map_err(other)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "podwall stand-in API server");
    let certificate = params.signed_by(&key, &ca).map_err(other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity {
        ca_pem: ca.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
