//! TLS for the API: a rustls server configuration from PEM files (the
//! certificate chain and its private key), with the ring crypto provider
//! and HTTP/2 and HTTP/1.1 offered by ALPN. Agents reach the server over
//! HTTPS; plain HTTP is for loopback and tests.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::error::{invalid, Error};

/// The server configuration for `cert` (PEM chain, leaf first) and `key`
/// (PEM private key: PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("TLS certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "TLS certificate {}: no PEM certificate in the file",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("TLS key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            invalid(format!(
                "TLS certificate {} and key {} do not go together: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
