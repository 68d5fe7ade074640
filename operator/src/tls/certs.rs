//! Issuing and checking the self-managed CA and serving certificate. Pure: the time is
//! passed in, nothing here talks to the API server.
//!
//! The CA lives ten years and is kept across renewals, because every injected agent carries
//! its PEM in `PROCWATCH_CA_PEM` until its pod is replaced; only the serving certificate is
//! reissued (yearly, or when the names it must cover change).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::{TlsError, TlsMaterial};

const DAY: Duration = Duration::from_secs(24 * 3600);
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Renew the serving certificate when less than this is left: a restart within two months
/// picks up a fresh one well before it lapses.
pub const SERVING_RENEW_BEFORE: Duration = Duration::from_secs(60 * 24 * 3600);
/// Replace the CA (and with it every agent's trust, at the pods' next restart) this early.
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);
/// Tolerates clocks of other machines that are a little behind ours.
const BACKDATE: Duration = Duration::from_secs(3600);

const CA_COMMON_NAME: &str = "procwatch-operator-ca";
const SERVING_COMMON_NAME: &str = "procwatch-operator";

/// The CA: its certificate and key (PEM) and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

/// The subject alternative names the serving certificate must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sans {
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

impl Sans {
    /// A canonical text form (sorted, comma-separated), stored beside the certificate so a
    /// change of names is noticed exactly, removals included.
    pub fn canonical(&self) -> String {
        let mut all: Vec<String> = self
            .dns_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .chain(self.ip_addresses.iter().map(IpAddr::to_string))
            .collect();
        all.sort();
        all.dedup();
        all.join(",")
    }

    fn server_names(&self) -> Result<Vec<ServerName<'static>>, TlsError> {
        let dns = self.dns_names.iter().map(|name| {
            ServerName::try_from(name.clone()).map_err(|_| TlsError::InvalidName(name.clone()))
        });
        let ips = self
            .ip_addresses
            .iter()
            .map(|ip| Ok(ServerName::IpAddress((*ip).into())));
        dns.chain(ips).collect()
    }
}

/// A new CA, valid for ten years from `now`.
pub fn issue_ca(now: SystemTime) -> Result<CaMaterial, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    let not_after = now + CA_LIFETIME;
    set_validity(&mut params, now - BACKDATE, not_after);
    let cert = params.self_signed(&key)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: truncate_to_seconds(not_after),
    })
}

/// A serving certificate for `sans`, valid for a year from `now`, signed by `ca`.
pub fn issue_serving(
    ca: &CaMaterial,
    sans: &Sans,
    now: SystemTime,
) -> Result<TlsMaterial, TlsError> {
    if sans.dns_names.is_empty() && sans.ip_addresses.is_empty() {
        return Err(TlsError::NoNames);
    }
    // Also catches names rustls could never match, before they end up in a certificate.
    sans.server_names()?;
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, SERVING_COMMON_NAME);
    params.subject_alt_names = sans
        .dns_names
        .iter()
        .map(|name| {
            name.clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| TlsError::InvalidName(name.clone()))
        })
        .chain(
            sans.ip_addresses
                .iter()
                .map(|ip| Ok(SanType::IpAddress(*ip))),
        )
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now - BACKDATE, now + SERVING_LIFETIME);
    let cert = params.signed_by(&key, &issuer)?;
    let material = TlsMaterial {
        cert_chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca.cert_pem.clone(),
    };
    // The CA parameters are rebuilt, not parsed, so prove the chain before handing it out.
    verify(&material, sans, now)?;
    Ok(material)
}

/// Checks that the serving certificate chains to the CA and covers every name in `sans` at
/// time `at` (pass a future time to ask "still valid then?").
pub fn verify(material: &TlsMaterial, sans: &Sans, at: SystemTime) -> Result<(), TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(material.ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(material.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()?;
    let (leaf, intermediates) = chain.split_first().ok_or(TlsError::NoCertificate)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    for name in sans.server_names()? {
        verifier
            .verify_server_cert(
                leaf,
                intermediates,
                &name,
                &[],
                UnixTime::since_unix_epoch(seconds),
            )
            .map_err(|source| TlsError::Untrusted {
                name: format!("{name:?}"),
                source,
            })?;
    }
    Ok(())
}

/// What to do with what is stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Still good: serve it.
    Keep,
    /// Keep the CA, issue a new serving certificate.
    RenewServing(String),
    /// Start over with a new CA.
    RenewAll(String),
}

/// What was read back from the Secret; any part may be missing.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub ca: Option<CaMaterial>,
    pub serving: Option<TlsMaterial>,
    pub sans: Option<String>,
}

/// Decides whether the stored material can be served as it is for `wanted` at `now`.
pub fn plan(stored: &Stored, wanted: &Sans, now: SystemTime) -> Plan {
    let Some(ca) = &stored.ca else {
        return Plan::RenewAll("no CA stored".to_string());
    };
    if ca.not_after < now + CA_RENEW_BEFORE {
        return Plan::RenewAll("the CA expires within a year".to_string());
    }
    if let Err(error) = KeyPair::from_pem(&ca.key_pem) {
        return Plan::RenewAll(format!("the CA key does not parse: {error}"));
    }
    let Some(serving) = &stored.serving else {
        return Plan::RenewServing("no serving certificate stored".to_string());
    };
    if serving.ca_pem != ca.cert_pem {
        return Plan::RenewServing("the serving certificate is of another CA".to_string());
    }
    if stored.sans.as_deref() != Some(wanted.canonical().as_str()) {
        return Plan::RenewServing(format!(
            "names changed from {:?} to {:?}",
            stored.sans.as_deref().unwrap_or_default(),
            wanted.canonical()
        ));
    }
    if let Err(error) = super::reload::certified_key(serving) {
        return Plan::RenewServing(format!("the serving certificate is unusable: {error}"));
    }
    if let Err(error) = verify(serving, wanted, now + SERVING_RENEW_BEFORE) {
        return Plan::RenewServing(format!(
            "the serving certificate is not valid for the next {} days: {error}",
            SERVING_RENEW_BEFORE.as_secs() / DAY.as_secs()
        ));
    }
    Plan::Keep
}

/// The CA's distinguished name and usages; deterministic, so a stored CA key can sign again.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Sets the validity period (rcgen takes `time` dates; counted from the epoch here so no
/// second date library is needed).
fn set_validity(params: &mut CertificateParams, from: SystemTime, until: SystemTime) {
    let epoch = date_time_ymd(1970, 1, 1);
    let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_before = epoch + since_epoch(from);
    params.not_after = epoch + since_epoch(until);
}

pub fn truncate_to_seconds(time: SystemTime) -> SystemTime {
    UNIX_EPOCH
        + Duration::from_secs(
            time.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
}
