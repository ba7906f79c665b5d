//! TLS for the `tcp` connector: a rustls acceptor for sources (certificate and
//! key from PEM files) and a connector for clients (a CA file, or the
//! platform's trust store). Files are read when the route loads, so `ferry
//! check` reports a missing or unreadable certificate before anything runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// TLS for a `tcp` source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// TLS for a `tcp` sink or `tcp_call` step.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CA certificates (PEM) to trust; default: the platform's trust store.
    pub ca: Option<PathBuf>,
    /// Name to verify in the server certificate (default: the host of `connect`).
    pub server_name: Option<String>,
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

impl ServerTlsConfig {
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        crate::install_crypto_provider();
        let chain = certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("cannot read private key from {}: {e}", self.key.display()))?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("tls: certificate and key do not fit together: {e}"))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ClientTlsConfig {
    /// A connector and the name to verify for `host`.
    pub fn connector(&self, host: &str) -> Result<(TlsConnector, ServerName<'static>), String> {
        crate::install_crypto_provider();
        let config = match &self.ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(path)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
                }
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            }
            None => {
                use rustls_platform_verifier::ConfigVerifierExt;
                rustls::ClientConfig::with_platform_verifier()
                    .map_err(|e| format!("tls: cannot load the platform trust store: {e}"))?
            }
        };
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("tls: `{name}` is not a valid server name"))?;
        Ok((TlsConnector::from(Arc::new(config)), name))
    }
}
