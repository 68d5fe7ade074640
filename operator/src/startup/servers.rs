//! The serving certificate and the servers: HTTPS for the webhook, HTTPS for the report
//! endpoint (each on its own port, with its own connection bounds), and plain HTTP (metrics
//! and health).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use kube::Client;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Caches, Shared, Shutdown, StartError};
use crate::admission::{self, AdmissionState, InjectionSettings};
use crate::cli::Cli;
use crate::errors::Chain;
use crate::health::{self, HealthState, Part, Readiness};
use crate::leader::Leadership;
use crate::report::capacity::Capacity;
use crate::report::{self, ReportState, auth::Authenticator};
use crate::tls::{self, CertificateHandle};

/// How often the webhook's caBundle is checked (a re-applied manifest may have emptied it).
const CA_BUNDLE_RESYNC: Duration = Duration::from_secs(60);
const CA_BUNDLE_RETRY: Duration = Duration::from_secs(10);
/// How often the serving certificate is loaded again (rotated files, a renewed Secret).
const TLS_RELOAD: Duration = Duration::from_secs(300);

/// The HTTPS server's configuration and the certificate it presents (replaced on renewal).
pub struct Serving {
    pub config: Arc<ServerConfig>,
    pub certificate: CertificateHandle,
}

/// Loads the serving certificate, then keeps it fresh, and the webhook configuration's
/// caBundle equal to its CA.
pub async fn load_certificate(client: &Client, cli: &Cli) -> Result<Serving, StartError> {
    let source = cli.tls_source()?;
    let material =
        tls::load(client.clone(), &source)
            .await
            .map_err(|error| StartError::LoadCertificate {
                from: Box::new(source.clone()),
                source: error,
            })?;
    let (config, certificate) =
        tls::reloadable_server_config(&material).map_err(StartError::UnusableCertificate)?;
    tokio::spawn(tls::keep_fresh(
        client.clone(),
        source,
        certificate.clone(),
        TLS_RELOAD,
    ));
    if !cli.webhook_configuration.is_empty() {
        tokio::spawn(keep_ca_bundle(
            client.clone(),
            cli.webhook_configuration.clone(),
            certificate.clone(),
        ));
    }
    Ok(Serving {
        config,
        certificate,
    })
}

/// Keeps the webhook configuration's caBundle equal to the CA of the certificate served now.
async fn keep_ca_bundle(
    client: Client,
    webhook_configuration: String,
    certificate: CertificateHandle,
) {
    loop {
        let ca_pem = certificate.material().ca_pem;
        let pause = match tls::sync_ca_bundle(client.clone(), &webhook_configuration, &ca_pem).await
        {
            Ok(()) => CA_BUNDLE_RESYNC,
            Err(error) => {
                tracing::warn!(
                    %webhook_configuration,
                    error = %Chain(&error),
                    "cannot set the webhook's caBundle; pods are admitted without the agent until it is set"
                );
                CA_BUNDLE_RETRY
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// The pod admission webhook.
pub fn admission_routes(
    settings: InjectionSettings,
    serving: &Serving,
    shared: &Shared,
    caches: &Caches,
) -> Router {
    admission::router(AdmissionState {
        watches: caches.watches.clone(),
        namespaces: caches.namespaces.clone(),
        readiness: shared.readiness.clone(),
        settings: Arc::new(settings),
        certificate: serving.certificate.clone(),
        metrics: shared.admission_metrics.clone(),
    })
}

/// The endpoint agents post their reports to.
pub fn report_routes(
    cli: &Cli,
    client: &Client,
    shared: &Shared,
    caches: &Caches,
    leadership: &Leadership,
) -> Router {
    report::router(ReportState {
        authenticator: Arc::new(Authenticator::new(
            client.clone(),
            cli.token_review_cache_ttl(),
            cli.token_review_cache_size,
        )),
        watches: caches.watches.clone(),
        pods: caches.pods.clone(),
        findings: shared.findings.clone(),
        triggers: shared.triggers.clone(),
        leadership: leadership.clone(),
        metrics: shared.metrics.clone(),
        max_body_bytes: cli.max_report_bytes,
        capacity: Capacity::new(cli.max_reports_in_flight, cli.max_reporting_pods),
    })
}

/// A server running until shutdown.
pub struct Server {
    /// The address it listens on (the port is known even when 0 was asked for).
    pub address: SocketAddr,
    name: &'static str,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Waits for the server to finish its open requests after shutdown.
    pub async fn stopped(self) {
        if let Ok(Err(error)) = self.task.await {
            tracing::warn!(%error, "{} server stopped with an error", self.name);
        }
    }
}

/// Binds `address` (given by `flag`); returns the listener and the address it got.
async fn listen(
    address: SocketAddr,
    flag: &'static str,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Listen {
        address,
        flag,
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// Serves `app` over TLS on `address` (given by `flag`) until shutdown.
pub async fn serve_https(
    address: SocketAddr,
    flag: &'static str,
    config: Arc<ServerConfig>,
    app: Router,
    shutdown: &Shutdown,
) -> Result<Server, StartError> {
    let (listener, address) = listen(address, flag).await?;
    let task = tokio::spawn(tls::serve_listener(listener, config, app, shutdown.wait()));
    Ok(Server {
        address,
        name: flag.trim_start_matches("--"),
        task,
    })
}

/// Serves the webhook on `--admission-addr` and the report endpoint on `--report-addr`, and
/// marks the HTTPS part of readiness once both listen.
pub async fn serve_admission_and_reports(
    cli: &Cli,
    config: Arc<ServerConfig>,
    admission: Router,
    reports: Router,
    shutdown: &Shutdown,
    readiness: &Readiness,
) -> Result<[Server; 2], StartError> {
    let admission = serve_https(
        cli.admission_addr,
        "--admission-addr",
        config.clone(),
        admission,
        shutdown,
    )
    .await?;
    let reports = serve_https(cli.report_addr, "--report-addr", config, reports, shutdown).await?;
    readiness.set(Part::HttpsListening);
    Ok([admission, reports])
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `address` (`--metrics-addr`) until
/// shutdown.
pub async fn serve_metrics(
    address: SocketAddr,
    shared: &Shared,
    leadership: &Leadership,
    shutdown: &Shutdown,
) -> Result<Server, StartError> {
    let (listener, address) = listen(address, "--metrics-addr").await?;
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    let app = health::router(HealthState {
        registry: shared.registry.clone(),
        readiness: shared.readiness.clone(),
        leadership: leadership.clone(),
    });
    let task = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.wait())
            .into_future(),
    );
    Ok(Server {
        address,
        name: "metrics",
        task,
    })
}
