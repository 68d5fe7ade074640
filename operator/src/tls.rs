//! TLS for the webhook and the report endpoint: the serving certificate (self-managed in a
//! Secret, or files from cert-manager), the rustls configuration, the HTTPS server, and the
//! webhook configuration's `caBundle`.

mod certs;
mod reload;
mod server;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use procwatch_crds::constants::FIELD_MANAGER;

use crate::errors::Chain;

pub use certs::{CaMaterial, Plan, Sans, Stored, issue_ca, issue_serving, plan, verify};
pub use reload::{CertificateHandle, keep_fresh, reloadable_server_config};
pub use server::{Limits, MAX_REQUESTS_IN_FLIGHT, serve_listener, serve_with_limits};

/// A serving certificate chain and key, and the CA that clients should trust, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files written by someone else (cert-manager), read as they are.
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    },
    /// A CA and serving certificate the operator issues itself and keeps in a Secret of its
    /// namespace, shared by every replica.
    SelfManaged {
        namespace: String,
        secret_name: String,
        dns_names: Vec<String>,
        ip_addresses: Vec<IpAddr>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad PEM")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("no certificate in the PEM")]
    NoCertificate,
    #[error("the serving certificate needs at least one DNS name or IP address")]
    NoNames,
    #[error("{0:?} is not a valid DNS name")]
    InvalidName(String),
    #[error("cannot issue a certificate")]
    Issue(#[from] rcgen::Error),
    #[error("rustls refused the certificate or key")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build a certificate verifier")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("the serving certificate is not trusted for {name}")]
    Untrusted {
        name: String,
        #[source]
        source: rustls::Error,
    },
    #[error("Secret {0} holds no usable {1}")]
    SecretContent(String, &'static str),
    #[error("Kubernetes API request failed")]
    Kube(#[from] kube::Error),
    #[error("{0} kept changing under us; giving up after {1} attempts")]
    Contention(String, usize),
}

/// Keys of the self-managed Secret (type `kubernetes.io/tls`).
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
/// Annotations beside the keys: the names the serving certificate covers, and when the CA
/// expires (Unix seconds), so neither needs an X.509 parser to check.
const SANS_ANNOTATION: &str = "procwatch.dev/serving-names";
const CA_NOT_AFTER_ANNOTATION: &str = "procwatch.dev/ca-not-after";
/// Optimistic-concurrency retries against other replicas writing the same object.
const ATTEMPTS: usize = 5;

/// Loads the serving material. Self-managed: gets or creates the Secret, and reissues the
/// serving certificate (keeping the CA) when it expires soon or the names changed.
pub async fn load(client: Client, source: &TlsSource) -> Result<TlsMaterial, TlsError> {
    match source {
        TlsSource::Files { cert, key, ca } => {
            let material = TlsMaterial {
                cert_chain_pem: read(cert).await?,
                key_pem: read(key).await?,
                ca_pem: read(ca).await?,
            };
            reload::certified_key(&material)?;
            Ok(material)
        }
        TlsSource::SelfManaged {
            namespace,
            secret_name,
            dns_names,
            ip_addresses,
        } => {
            let sans = Sans {
                dns_names: dns_names.clone(),
                ip_addresses: ip_addresses.clone(),
            };
            let secrets: Api<Secret> = Api::namespaced(client, namespace);
            self_managed(&secrets, secret_name, &sans).await
        }
    }
}

async fn read(path: &Path) -> Result<String, TlsError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

async fn self_managed(
    secrets: &Api<Secret>,
    name: &str,
    sans: &Sans,
) -> Result<TlsMaterial, TlsError> {
    for _ in 0..ATTEMPTS {
        let now = SystemTime::now();
        let Some(existing) = secrets.get_opt(name).await? else {
            let (ca, material) = reissue(None, sans, now, name)?;
            let secret = to_secret(name, &ca, &material, sans, None);
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = name, names = %sans.canonical(), "created CA and serving certificate");
                    return Ok(material);
                }
                // Another replica created it first: use theirs.
                Err(kube::Error::Api(status)) if status.is_already_exists() => continue,
                Err(error) => return Err(error.into()),
            }
        };
        let stored = from_secret(&existing);
        let (ca, reason) = match plan(&stored, sans, now) {
            Plan::Keep => {
                return stored
                    .serving
                    .ok_or(TlsError::SecretContent(name.to_string(), TLS_CRT));
            }
            Plan::RenewServing(reason) => (stored.ca.clone(), reason),
            Plan::RenewAll(reason) => (None, reason),
        };
        let (ca, material) = reissue(ca, sans, now, name)?;
        let version = existing.metadata.resource_version.clone();
        let secret = to_secret(name, &ca, &material, sans, version);
        match secrets.replace(name, &PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = name, %reason, names = %sans.canonical(), "renewed serving certificate");
                return Ok(material);
            }
            // Another replica renewed it meanwhile: read theirs.
            Err(kube::Error::Api(status)) if status.is_conflict() => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(TlsError::Contention(format!("Secret {name}"), ATTEMPTS))
}

/// A serving certificate signed by the stored CA, or by a new CA when there is none or it
/// cannot sign.
fn reissue(
    ca: Option<CaMaterial>,
    sans: &Sans,
    now: SystemTime,
    secret_name: &str,
) -> Result<(CaMaterial, TlsMaterial), TlsError> {
    if let Some(ca) = ca {
        match issue_serving(&ca, sans, now) {
            Ok(material) => return Ok((ca, material)),
            Err(error) => {
                tracing::warn!(secret = secret_name, error = %Chain(&error), "stored CA cannot sign; replacing it (running agents trust the old one until their pods restart)");
            }
        }
    }
    let ca = issue_ca(now)?;
    let material = issue_serving(&ca, sans, now)?;
    Ok((ca, material))
}

fn to_secret(
    name: &str,
    ca: &CaMaterial,
    material: &TlsMaterial,
    sans: &Sans,
    resource_version: Option<String>,
) -> Secret {
    let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
    let ca_not_after = ca
        .not_after
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version,
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "procwatch".to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "procwatch-operator".to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([
                (SANS_ANNOTATION.to_string(), sans.canonical()),
                (
                    CA_NOT_AFTER_ANNOTATION.to_string(),
                    ca_not_after.to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (TLS_CRT.to_string(), bytes(&material.cert_chain_pem)),
            (TLS_KEY.to_string(), bytes(&material.key_pem)),
            (CA_CRT.to_string(), bytes(&ca.cert_pem)),
            (CA_KEY.to_string(), bytes(&ca.key_pem)),
        ])),
        ..Secret::default()
    }
}

fn from_secret(secret: &Secret) -> Stored {
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
    };
    let annotation = |key: &str| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    let ca_not_after = annotation(CA_NOT_AFTER_ANNOTATION)
        .and_then(|secs| secs.parse::<u64>().ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
    let ca = match (text(CA_CRT), text(CA_KEY), ca_not_after) {
        (Some(cert_pem), Some(key_pem), Some(not_after)) => Some(CaMaterial {
            cert_pem,
            key_pem,
            not_after,
        }),
        _ => None,
    };
    let serving = match (text(TLS_CRT), text(TLS_KEY), text(CA_CRT)) {
        (Some(cert_chain_pem), Some(key_pem), Some(ca_pem)) => Some(TlsMaterial {
            cert_chain_pem,
            key_pem,
            ca_pem,
        }),
        _ => None,
    };
    Stored {
        ca,
        serving,
        sans: annotation(SANS_ANNOTATION),
    }
}

/// Sets `clientConfig.caBundle` of every webhook of the MutatingWebhookConfiguration to
/// `ca_pem`, with a JSON patch that first tests each webhook's name, so a concurrent edit of
/// the list makes the patch fail (and retry) instead of writing the wrong entry.
pub async fn sync_ca_bundle(
    client: Client,
    webhook_configuration: &str,
    ca_pem: &str,
) -> Result<(), TlsError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    for _ in 0..ATTEMPTS {
        let current = api.get(webhook_configuration).await?;
        let patch = ca_bundle_patch(&current, ca_pem);
        if patch.0.is_empty() {
            tracing::debug!(webhook_configuration, "caBundle already current");
            return Ok(());
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match api
            .patch(webhook_configuration, &params, &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(webhook_configuration, "caBundle updated");
                return Ok(());
            }
            // A failed `test` (the list changed under us) or a conflict: read again.
            Err(kube::Error::Api(status)) if status.is_invalid() || status.is_conflict() => {
                continue;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(TlsError::Contention(
        format!("MutatingWebhookConfiguration {webhook_configuration}"),
        ATTEMPTS,
    ))
}

/// The JSON patch that brings every webhook's `caBundle` to `ca_pem`; empty when all are.
pub fn ca_bundle_patch(
    configuration: &MutatingWebhookConfiguration,
    ca_pem: &str,
) -> json_patch::Patch {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, PatchOperation, TestOperation};

    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    let mut ops = Vec::new();
    for (index, webhook) in configuration.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() == Some(&bundle) {
            continue;
        }
        let index = index.to_string();
        ops.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["webhooks", index.as_str(), "name"]),
            value: serde_json::Value::String(webhook.name.clone()),
        }));
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["webhooks", index.as_str(), "clientConfig", "caBundle"]),
            value: serde_json::json!(bundle),
        }));
    }
    json_patch::Patch(ops)
}

#[cfg(test)]
mod tests;
