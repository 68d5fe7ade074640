//! The operator's start-up, one step per function, in the order the binary takes them:
//! [`connect`] to the API server, [`load_certificate`], [`start_caches`],
//! [`join_election`], [`serve_admission_and_reports`] and [`serve_metrics`], [`lead`] whenever this replica
//! holds the lease, and [`stop`] in order.

mod caches;
mod election;
mod servers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::admission::{self, AdmissionMetrics, InjectionError, InjectionSettings};
use crate::cli::{Cli, CliError};
use crate::controller::Memory;
use crate::controller::namespaces::PodNames;
use crate::controller::triggers::Triggers;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::report::store::FindingsStore;
use crate::tls::{TlsError, TlsSource};

pub use caches::{Caches, follow_pods, follow_watches, start_caches};
pub use election::{ControllerSetup, Election, identity, join_election, lead, stop};
pub use servers::{
    Server, Serving, admission_routes, load_certificate, report_routes,
    serve_admission_and_reports, serve_https, serve_metrics,
};

/// How long servers and the lease release get after shutdown is asked for.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot configure the Kubernetes client (in-cluster service account or KUBECONFIG)")]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("cannot reach the Kubernetes API server")]
    ApiServer(#[source] kube::Error),
    #[error(transparent)]
    Cli(#[from] CliError),
    #[error("cannot load the serving certificate ({from:?})")]
    LoadCertificate {
        from: Box<TlsSource>,
        #[source]
        source: TlsError,
    },
    #[error("unusable serving certificate")]
    UnusableCertificate(#[source] TlsError),
    #[error("invalid agent injection settings (--agent-token-expiration-seconds)")]
    InjectionSettings(#[source] InjectionError),
    #[error("cannot listen on {address} ({flag})")]
    Listen {
        address: std::net::SocketAddr,
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("leader election ended")]
    ElectionEnded(#[source] ElectionEnd),
}

/// Why the leader election task finished.
#[derive(Debug, thiserror::Error)]
pub enum ElectionEnd {
    #[error("the elector stopped")]
    Stopped,
    #[error("the election task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Asks for shutdown and resolves once it is asked for (SIGTERM, SIGINT, or a fatal error
/// elsewhere).
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Sender<bool>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(watch::Sender::new(false))
    }
}

impl Shutdown {
    /// A shutdown that SIGTERM and SIGINT also ask for.
    pub fn on_signals() -> Self {
        let shutdown = Shutdown::default();
        tokio::spawn(signals(shutdown.clone()));
        shutdown
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut receiver = self.0.subscribe();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }
}

async fn signals(shutdown: Shutdown) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.trigger();
}

/// A client for the API server, and what its version allows.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    /// Whether the agent can run as a native sidecar (an init container that keeps running).
    pub native_sidecars: bool,
}

/// Builds the client (in-cluster or from KUBECONFIG) and asks the API server its version.
pub async fn connect() -> Result<Connection, StartError> {
    let mut config = kube::Config::infer().await.map_err(StartError::Config)?;
    // The client would retry 429 and 503 for minutes inside one request: an eviction refused
    // by a PodDisruptionBudget would hold its reconcile (and shutdown) that long. Every caller
    // here retries on its own terms instead (requeue, error backoff, the agent's retry).
    config.default_retry = false;
    let client = Client::try_from(config).map_err(StartError::Client)?;
    let version = client
        .apiserver_version()
        .await
        .map_err(StartError::ApiServer)?;
    let native_sidecars = admission::supports_native_sidecars(&version);
    tracing::info!(
        version = %version.git_version,
        native_sidecars,
        "connected to the API server"
    );
    Ok(Connection {
        client,
        native_sidecars,
    })
}

/// How the webhook injects the agent, from the flags; refused when the API server would
/// refuse the pods it patches.
pub fn injection_settings(
    cli: &Cli,
    native_sidecars: bool,
) -> Result<InjectionSettings, StartError> {
    let settings = InjectionSettings {
        agent_image: cli.agent_image.clone(),
        image_pull_policy: cli.agent_image_pull_policy.clone(),
        report_url: cli.report_url.clone(),
        native_sidecars,
        token_expiration_seconds: cli.agent_token_expiration_seconds,
    };
    settings.validate().map_err(StartError::InjectionSettings)?;
    Ok(settings)
}

/// What the caches, the servers and the controller share.
#[derive(Clone)]
pub struct Shared {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub admission_metrics: Arc<AdmissionMetrics>,
    pub readiness: Arc<Readiness>,
    /// What the controller remembers per watch (last status written).
    pub memory: Arc<Memory>,
    /// The latest report of each pod.
    pub findings: FindingsStore,
    /// Reconciles asked for by report arrivals and pod changes.
    pub triggers: Triggers,
    /// The pod cache's names by namespace.
    pub pod_names: PodNames,
}

impl Default for Shared {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let admission_metrics = Arc::new(AdmissionMetrics::register(&mut registry));
        Shared {
            registry: Arc::new(registry),
            metrics,
            admission_metrics,
            readiness: Arc::default(),
            memory: Arc::default(),
            findings: FindingsStore::default(),
            triggers: Triggers::default(),
            pod_names: PodNames::default(),
        }
    }
}

#[cfg(test)]
mod tests;
