//! Leader election and what this replica does with it: every replica serves, only the
//! leader runs the controller, and a replica that loses the lease stops.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ElectionEnd, STOP_TIMEOUT, Server, Shared, Shutdown, StartError};
use crate::cli::Cli;
use crate::controller::{self, MIN_WRITE_INTERVAL};
use crate::health::Part;
use crate::leader::{self, LeaderError, Leadership, LeaseSettings};
use crate::pod_security::Namespaces;

/// A name unique to this process, so two replicas (even with one host name, as on a host
/// network) never share a lease identity.
pub fn identity(base: Option<String>) -> String {
    let base = base
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|| "procwatch-operator".into());
    let random = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
    format!("{base}_{:08x}", random & 0xffff_ffff)
}

/// This replica's part in the leader election.
pub struct Election {
    pub leadership: Leadership,
    pub identity: String,
    elector: JoinHandle<Result<(), LeaderError>>,
    /// Tells the elector to give the lease up (the controller has stopped).
    release: oneshot::Sender<()>,
}

impl Election {
    /// Waits for the elector to finish and says why it did.
    async fn ended(&mut self) -> ElectionEnd {
        match (&mut self.elector).await {
            Ok(Ok(())) => ElectionEnd::Stopped,
            Ok(Err(error)) => error.into(),
            Err(error) => error.into(),
        }
    }
}

/// Starts taking part in the election for the lease `--leader-election-lease`.
pub fn join_election(client: &Client, cli: &Cli) -> Election {
    let (leadership_sender, leadership) = Leadership::channel();
    let identity = identity(cli.leader_election_identity.clone());
    let lease_settings = LeaseSettings::new(
        cli.namespace.clone(),
        cli.leader_election_lease.clone(),
        identity.clone(),
    );
    tracing::info!(lease = %lease_settings.name, namespace = %lease_settings.namespace, %identity, "joining the leader election");
    let (release, released) = oneshot::channel::<()>();
    let elector = tokio::spawn(leader::run(
        Api::<Lease>::namespaced(client.clone(), &cli.namespace),
        lease_settings,
        leadership_sender,
        async move {
            let _ = released.await;
        },
    ));
    Election {
        leadership,
        identity,
        elector,
        release,
    }
}

/// What the controller is built from once this replica leads.
pub struct ControllerSetup {
    pub client: Client,
    pub pods: Store<Pod>,
    pub namespaces: Namespaces,
    pub shared: Shared,
    pub status_budget_bytes: usize,
}

impl ControllerSetup {
    fn context(self, identity: String) -> Arc<controller::Context> {
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "procwatch-operator".into(),
                instance: Some(identity),
            },
        );
        Arc::new(controller::Context {
            client: self.client,
            pods: self.pods,
            pod_names: self.shared.pod_names,
            namespaces: self.namespaces,
            findings: self.shared.findings,
            metrics: self.shared.metrics,
            recorder,
            memory: self.shared.memory,
            settings: controller::Settings {
                status_budget_bytes: self.status_budget_bytes,
                min_write_interval: MIN_WRITE_INTERVAL,
            },
            leading_since: Instant::now(),
        })
    }
}

/// Waits until this replica leads, then runs the controller until shutdown or until the
/// lease is lost. Returns why the lease was lost, if it was; an elector that ends before
/// this replica leads is an error.
pub async fn lead(
    election: &mut Election,
    shutdown: &Shutdown,
    controller: ControllerSetup,
) -> Result<Option<ElectionEnd>, StartError> {
    let mut waiting = election.leadership.clone();
    let leading = tokio::select! {
        () = waiting.acquired() => true,
        () = shutdown.wait() => false,
        ended = election.ended() => {
            shutdown.trigger();
            return Err(StartError::ElectionEnded(ended));
        }
    };
    if !leading {
        return Ok(None);
    }
    // A status computed from half-filled caches would be wrong; they sync in seconds.
    let readiness = controller.shared.readiness.clone();
    tokio::select! {
        () = readiness.wait_for(&[Part::WatchesSynced, Part::PodsSynced]) => {}
        () = shutdown.wait() => {}
    }
    tracing::info!("leading: starting the controller");
    let triggers = controller.shared.triggers.clone();
    let ctx = controller.context(election.identity.clone());
    let mut watching = election.leadership.clone();
    let overdue = {
        let stopping = shutdown.wait();
        async move {
            stopping.await;
            tokio::time::sleep(STOP_TIMEOUT).await;
        }
    };
    let lost = tokio::select! {
        () = controller::run(ctx, triggers, shutdown.wait()) => None,
        () = overdue => {
            tracing::warn!("reconciles still running {STOP_TIMEOUT:?} after shutdown; leaving them");
            None
        }
        () = watching.lost() => {
            // Stop writing at once: another replica may lead already.
            shutdown.trigger();
            Some(election.ended().await)
        }
    };
    Ok(lost)
}

/// Stops in order: the lease is released (the controller has stopped), then the elector and
/// the servers get [`STOP_TIMEOUT`] to finish. A lost lease is an error, so the process exits
/// and a fresh one rejoins the election.
pub async fn stop(
    shutdown: &Shutdown,
    election: Election,
    servers: impl IntoIterator<Item = Server>,
    lost: Option<ElectionEnd>,
) -> Result<(), StartError> {
    shutdown.trigger();
    // Let a successor take over without waiting for the lease to expire.
    let _ = election.release.send(());
    let stopping = async {
        if lost.is_none() {
            let _ = election.elector.await;
        }
        for server in servers {
            server.stopped().await;
        }
    };
    if tokio::time::timeout(STOP_TIMEOUT, stopping).await.is_err() {
        tracing::warn!("shutdown took longer than {STOP_TIMEOUT:?}; exiting anyway");
    }
    match lost {
        Some(end) => Err(StartError::SteppedDown(end)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}
