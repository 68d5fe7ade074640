//! Command-line flags of `procwatch-operator`, each with an environment fallback.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use axum::http::Uri;
use clap::{Parser, ValueEnum};
use procwatch_crds::Interval;

use crate::budget::DEFAULT_STATUS_BUDGET_BYTES;
use crate::report::DEFAULT_MAX_REPORT_BYTES;
use crate::report::capacity::{DEFAULT_MAX_REPORTING_PODS, DEFAULT_MAX_REPORTS_IN_FLIGHT};
use crate::tls::TlsSource;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The procwatch operator: ProcessWatch controller, pod admission webhook and report endpoint.
#[derive(Clone, Debug, Parser)]
#[command(name = "procwatch-operator", version, about, long_about = None)]
pub struct Cli {
    /// HTTPS address of the admission webhook (/mutate), called by the API server.
    #[arg(long, env = "PROCWATCH_ADMISSION_ADDR", default_value = "0.0.0.0:9443")]
    pub admission_addr: SocketAddr,
    /// HTTPS address of the report endpoint (/report/v1), called by agents in pods. A port of
    /// its own: a network policy can admit each caller to its port only, and a flood of
    /// connections to one never takes the other's connection slots.
    #[arg(long, env = "PROCWATCH_REPORT_ADDR", default_value = "0.0.0.0:9444")]
    pub report_addr: SocketAddr,
    /// Plain HTTP address of /metrics, /healthz and /readyz.
    #[arg(long, env = "PROCWATCH_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// The operator's own namespace: its TLS Secret and leader Lease live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "procwatch-system")]
    pub namespace: String,

    /// Self-managed TLS: the Secret that holds the CA and serving certificate.
    #[arg(
        long,
        env = "PROCWATCH_TLS_SECRET",
        default_value = "procwatch-serving-cert"
    )]
    pub tls_secret: String,
    /// Self-managed TLS: a DNS name of the serving certificate (repeatable). Without any name
    /// or IP, the host of --report-url is used.
    #[arg(
        long = "tls-dns-name",
        env = "PROCWATCH_TLS_DNS_NAMES",
        value_delimiter = ','
    )]
    pub tls_dns_names: Vec<String>,
    /// Self-managed TLS: an IP address of the serving certificate (repeatable).
    #[arg(long = "tls-ip", env = "PROCWATCH_TLS_IPS", value_delimiter = ',')]
    pub tls_ips: Vec<IpAddr>,
    /// Files mode (e.g. cert-manager): the serving certificate chain, PEM. Needs the key and CA.
    #[arg(long, env = "PROCWATCH_TLS_CERT_FILE", requires_all = ["tls_key_file", "tls_ca_file"])]
    pub tls_cert_file: Option<PathBuf>,
    /// Files mode: the serving key, PEM.
    #[arg(long, env = "PROCWATCH_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Files mode: the CA that signed the serving certificate, PEM (given to agents).
    #[arg(long, env = "PROCWATCH_TLS_CA_FILE", requires = "tls_cert_file")]
    pub tls_ca_file: Option<PathBuf>,
    /// MutatingWebhookConfiguration whose caBundle is kept in step with the CA; empty to leave
    /// it alone.
    #[arg(
        long,
        env = "PROCWATCH_WEBHOOK_CONFIGURATION",
        default_value = "procwatch"
    )]
    pub webhook_configuration: String,

    /// Image of the injected agent: the procwatch image, which holds both binaries.
    #[arg(
        long,
        env = "PROCWATCH_AGENT_IMAGE",
        default_value = "procwatch:latest"
    )]
    pub agent_image: String,
    #[arg(
        long,
        env = "PROCWATCH_AGENT_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        value_parser = ["Always", "IfNotPresent", "Never"]
    )]
    pub agent_image_pull_policy: String,
    /// Where agents report (the port of --report-addr, through the Service); the serving
    /// certificate must cover its host.
    #[arg(
        long,
        env = "PROCWATCH_REPORT_URL",
        default_value = "https://procwatch-operator.procwatch-system.svc:9444/report/v1"
    )]
    pub report_url: String,
    /// Lifetime of the agent's projected token, in seconds (at least 600).
    #[arg(
        long,
        env = "PROCWATCH_AGENT_TOKEN_EXPIRATION_SECONDS",
        default_value_t = 3600
    )]
    pub agent_token_expiration_seconds: i64,

    /// Lease that elects the one replica running the controller.
    #[arg(
        long,
        env = "PROCWATCH_LEADER_ELECTION_LEASE",
        default_value = "procwatch-operator"
    )]
    pub leader_election_lease: String,
    /// This replica's name in the lease (a random suffix is added); defaults to the host name.
    #[arg(long, env = "POD_NAME")]
    pub leader_election_identity: Option<String>,

    /// Hard limit of a ProcessWatch status, in bytes of JSON.
    #[arg(long, env = "PROCWATCH_STATUS_BUDGET_BYTES", default_value_t = DEFAULT_STATUS_BUDGET_BYTES)]
    pub status_budget_bytes: usize,
    /// Largest report body accepted, in bytes.
    #[arg(long, env = "PROCWATCH_MAX_REPORT_BYTES", default_value_t = DEFAULT_MAX_REPORT_BYTES)]
    pub max_report_bytes: usize,
    /// Reports handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "PROCWATCH_MAX_REPORTS_IN_FLIGHT", default_value_t = DEFAULT_MAX_REPORTS_IN_FLIGHT)]
    pub max_reports_in_flight: usize,
    /// Pods whose latest report is kept; reports of more pods are answered 503 with
    /// Retry-After. Size the memory limit to it.
    #[arg(long, env = "PROCWATCH_MAX_REPORTING_PODS", default_value_t = DEFAULT_MAX_REPORTING_PODS)]
    pub max_reporting_pods: usize,
    /// How long a TokenReview answer is reused for a token that names no expiry, and (at most
    /// 10s) for a refused one; an accepted token is reused until it expires (1s to 1h).
    #[arg(long, env = "PROCWATCH_TOKEN_REVIEW_CACHE_TTL", default_value = "60s")]
    pub token_review_cache_ttl: Interval,
    /// Most TokenReview answers kept at once.
    #[arg(
        long,
        env = "PROCWATCH_TOKEN_REVIEW_CACHE_SIZE",
        default_value_t = 10_000
    )]
    pub token_review_cache_size: usize,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "PROCWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--report-url {0:?} is not an https:// URL with a host")]
    ReportUrl(String),
}

impl Cli {
    /// Where the serving certificate comes from: files when given, else self-managed.
    pub fn tls_source(&self) -> Result<TlsSource, CliError> {
        if let (Some(cert), Some(key), Some(ca)) =
            (&self.tls_cert_file, &self.tls_key_file, &self.tls_ca_file)
        {
            return Ok(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            });
        }
        let mut dns_names = self.tls_dns_names.clone();
        let mut ip_addresses = self.tls_ips.clone();
        if dns_names.is_empty() && ip_addresses.is_empty() {
            match self.report_host()?.parse::<IpAddr>() {
                Ok(ip) => ip_addresses.push(ip),
                Err(_) => dns_names.push(self.report_host()?),
            }
        }
        Ok(TlsSource::SelfManaged {
            namespace: self.namespace.clone(),
            secret_name: self.tls_secret.clone(),
            dns_names,
            ip_addresses,
        })
    }

    /// The host of --report-url, checked to be an https URL.
    pub fn report_host(&self) -> Result<String, CliError> {
        let invalid = || CliError::ReportUrl(self.report_url.clone());
        let uri: Uri = self.report_url.parse().map_err(|_| invalid())?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid());
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(invalid)?;
        Ok(host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string())
    }

    pub fn token_review_cache_ttl(&self) -> Duration {
        self.token_review_cache_ttl.as_duration()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("procwatch-operator").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn deployment_flags_parse() {
        let cli = parse(&[
            "--admission-addr=0.0.0.0:9443",
            "--report-addr=0.0.0.0:9444",
            "--metrics-addr=0.0.0.0:8080",
            "--namespace=procwatch-system",
            "--tls-secret=procwatch-serving-cert",
            "--tls-dns-name=procwatch-operator.procwatch-system.svc",
            "--tls-dns-name=procwatch-operator.procwatch-system.svc.cluster.local",
            "--tls-ip=127.0.0.1",
            "--webhook-configuration=procwatch",
            "--agent-image=procwatch:latest",
            "--agent-image-pull-policy=Never",
            "--report-url=https://127.0.0.1:9444/report/v1",
            "--leader-election-lease=procwatch-operator",
            "--token-review-cache-ttl=2m",
            "--log-format=json",
        ]);
        assert_eq!(cli.token_review_cache_ttl(), Duration::from_secs(120));
        assert_eq!(cli.log_format, LogFormat::Json);
        match cli.tls_source().unwrap() {
            TlsSource::SelfManaged {
                dns_names,
                ip_addresses,
                ..
            } => {
                assert_eq!(dns_names.len(), 2);
                assert_eq!(ip_addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_default_to_the_report_host_and_files_mode_needs_all_three() {
        let cli = parse(&["--report-url=https://127.0.0.1:9444/report/v1"]);
        assert!(matches!(
            cli.tls_source().unwrap(),
            TlsSource::SelfManaged { ip_addresses, .. } if ip_addresses.len() == 1
        ));
        let cli = parse(&[]);
        assert!(matches!(
            cli.tls_source().unwrap(),
            TlsSource::SelfManaged { dns_names, .. } if dns_names == ["procwatch-operator.procwatch-system.svc"]
        ));
        let files = parse(&["--tls-cert-file=c", "--tls-key-file=k", "--tls-ca-file=a"]);
        assert!(matches!(
            files.tls_source().unwrap(),
            TlsSource::Files { .. }
        ));
        assert!(Cli::try_parse_from(["procwatch-operator", "--tls-cert-file=c"]).is_err());
        let plain = parse(&["--report-url=http://example/report/v1"]);
        assert!(plain.tls_source().is_err());
    }
}
