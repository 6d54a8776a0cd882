//! TLS for loopback servers: a CA of the test's own, the certificates it signs,
//! and a server session over each connection (for
//! [`Loopback::start_with`](crate::http::Loopback::start_with)).

use std::net::TcpStream;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A certificate authority made by the test: its PEM, and what signs with it.
pub struct TestCa {
    pem: String,
    der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA whose common name is `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("a key pair");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("a self-signed CA");
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA's certificate in PEM, as a client is given it to trust.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA's own certificate and key, to present as a server's.
    pub fn own(&self) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::from_pem(&self.key_pem).expect("the CA's key");
        (self.der.clone(), key)
    }

    /// A server certificate for `names` signed by this CA, and its key: valid
    /// now, or long `expired`.
    pub fn leaf(&self, names: &[&str], expired: bool) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().expect("a key pair");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        (cert.der().clone(), key)
    }
}

/// A TLS server session presenting `cert` over each connection given it: the
/// `wrap` of [`Loopback::start_with`](crate::http::Loopback::start_with).
pub fn server(
    cert: CertificateDer<'static>,
    key: &KeyPair,
) -> impl Fn(TcpStream) -> Option<StreamOwned<ServerConnection, TcpStream>> + Send + 'static {
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert],
                PrivateKeyDer::try_from(key.serialize_der()).expect("a private key"),
            )
            .expect("a server certificate");
    let config = Arc::new(config);
    move |conn| {
        let session = ServerConnection::new(config.clone()).ok()?;
        Some(StreamOwned::new(session, conn))
    }
}
