//! A serving certificate that can change while the server runs: cert-manager rewrites its
//! files well before they expire, and a self-managed certificate is renewed 60 days ahead.
//! Without this an operator that runs for months would end up serving an expired one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::Client;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{TlsError, TlsMaterial, TlsSource, load};
use crate::errors::Chain;

/// The certificate a server built by [`reloadable_server_config`] presents; replacing it
/// takes effect from the next handshake.
#[derive(Clone, Debug)]
pub struct CertificateHandle(Arc<Current>);

#[derive(Debug)]
struct Current(RwLock<(Arc<CertifiedKey>, TlsMaterial)>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(crate::read(&self.0).0.clone())
    }
}

impl CertificateHandle {
    /// What is served now.
    pub fn material(&self) -> TlsMaterial {
        crate::read(&(self.0).0).1.clone()
    }

    /// Serves `material` from now on; `Ok(false)` when it is what is served already. On an
    /// error the current certificate stays.
    pub fn replace(&self, material: TlsMaterial) -> Result<bool, TlsError> {
        if self.material() == material {
            return Ok(false);
        }
        let key = certified_key(&material)?;
        *crate::write(&(self.0).0) = (key, material);
        Ok(true)
    }
}

/// A rustls server configuration (ring, TLS 1.2 and 1.3, HTTP/1.1 by ALPN) presenting the
/// material's chain, and the handle to change it later.
pub fn reloadable_server_config(
    material: &TlsMaterial,
) -> Result<(Arc<ServerConfig>, CertificateHandle), TlsError> {
    let current = Arc::new(Current(RwLock::new((
        certified_key(material)?,
        material.clone(),
    ))));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), CertificateHandle(current)))
}

/// Loads `source` again every `period` and serves what it yields when that changed. Runs
/// until dropped; a failed load is logged and retried at the next period.
pub async fn keep_fresh(
    client: Client,
    source: TlsSource,
    handle: CertificateHandle,
    period: Duration,
) {
    loop {
        tokio::time::sleep(period).await;
        let result = load(client.clone(), &source)
            .await
            .and_then(|material| handle.replace(material));
        match result {
            Ok(true) => tracing::info!("serving a renewed certificate"),
            Ok(false) => tracing::debug!("serving certificate unchanged"),
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot reload the serving certificate; keeping the current one");
            }
        }
    }
}

/// The chain and key in rustls' form, refusing a key that is not the certificate's; what
/// makes material servable.
pub(super) fn certified_key(material: &TlsMaterial) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(material.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes())?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}
