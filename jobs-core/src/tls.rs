//! TLS for `amqps://` URLs (`[amqp.tls]`): the CA, and a client certificate
//! for brokers that ask for one, checked before amqprs sees them.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{BrokerUrl, Error};

/// TLS settings (`[amqp.tls]`), used for `amqps://` URLs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the broker's certificate (`amqp.tls.ca_file`);
    /// default: the Mozilla roots built in.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that ask for one (`amqp.tls.cert_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (`amqp.tls.key_file`).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The TLS adaptor for an `amqps://` URL.
    pub(crate) fn adaptor(&self, url: &BrokerUrl) -> Result<amqprs::tls::TlsAdaptor, Error> {
        use rustls_pki_types::pem::PemObject;
        let bad = |key: &str, message: String| Error::Config { key: key.into(), message };
        // rustls needs a process-wide crypto provider; install ring's once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let domain = url.host_port().0;
        let tls = self;
        if let Some(ca) = &tls.ca_file {
            rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .map_err(|e| bad("amqp.tls.ca_file", format!("cannot read {}: {e}", ca.display())))?
                .next()
                .ok_or_else(|| bad("amqp.tls.ca_file", format!("{} holds no PEM certificate", ca.display())))?
                .map_err(|e| bad("amqp.tls.ca_file", format!("{}: {e}", ca.display())))?;
        }
        let adaptor = match (&tls.cert_file, &tls.key_file) {
            (None, None) => amqprs::tls::TlsAdaptor::without_client_auth(tls.ca_file.as_deref(), domain),
            (Some(cert), Some(key)) => {
                // amqprs panics on a bad key: check it first.
                rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad("amqp.tls.key_file", format!("{}: {e}", key.display())))?;
                amqprs::tls::TlsAdaptor::with_client_auth(tls.ca_file.as_deref(), cert, key, domain)
            }
            _ => return Err(bad("amqp.tls", "cert_file and key_file go together".into())),
        };
        adaptor.map_err(|e| bad("amqp.tls", e.to_string()))
    }
}
