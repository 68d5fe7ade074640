//! Leader election and what this replica does with it: every replica serves, only the
//! leader runs the controller. A replica that loses the lease (taken over, or not renewed
//! through an API server outage) stops the controller at once and serves on; it runs the
//! controller again when it leads again.

use std::future::Future;
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
use crate::health::{Part, Readiness};
use crate::leader::{self, Leadership, LeaseSettings};
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
    elector: JoinHandle<()>,
    /// Tells the elector to give the lease up (the controller has stopped).
    release: oneshot::Sender<()>,
}

impl Election {
    /// Waits for the elector to finish and says why it did.
    async fn ended(&mut self) -> ElectionEnd {
        match (&mut self.elector).await {
            Ok(()) => ElectionEnd::Stopped,
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

/// What the controller is built from each time this replica leads.
pub struct ControllerSetup {
    pub client: Client,
    pub pods: Store<Pod>,
    pub namespaces: Namespaces,
    pub shared: Shared,
    pub status_budget_bytes: usize,
}

impl ControllerSetup {
    /// A context for a term of leadership starting now. What an earlier term remembered is
    /// forgotten: another replica may have written statuses and evicted pods in between. The
    /// findings are kept: they are the agents' reports, whoever wrote the statuses.
    fn context(&self, identity: &str) -> Arc<controller::Context> {
        self.shared.memory.clear();
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "procwatch-operator".into(),
                instance: Some(identity.to_string()),
            },
        );
        Arc::new(controller::Context {
            client: self.client.clone(),
            pods: self.pods.clone(),
            pod_names: self.shared.pod_names.clone(),
            namespaces: self.namespaces.clone(),
            findings: self.shared.findings.clone(),
            metrics: self.shared.metrics.clone(),
            recorder,
            memory: self.shared.memory.clone(),
            settings: controller::Settings {
                status_budget_bytes: self.status_budget_bytes,
                min_write_interval: MIN_WRITE_INTERVAL,
            },
            leading_since: Instant::now(),
        })
    }
}

/// Runs the controller whenever this replica leads, until shutdown. An elector that ends
/// before shutdown is an error.
pub async fn lead(
    election: &mut Election,
    shutdown: &Shutdown,
    controller: ControllerSetup,
) -> Result<(), StartError> {
    let readiness = controller.shared.readiness.clone();
    let identity = election.identity.clone();
    lead_with(election, shutdown, &readiness, |stopping| {
        let ctx = controller.context(&identity);
        controller::run(ctx, controller.shared.triggers.clone(), stopping)
    })
    .await
}

/// Each time this replica becomes the leader, waits for the caches and starts `run` (given
/// the shutdown signal). The moment leadership is lost, `run` is dropped, so no reconcile
/// goes on to write a status or evict a pod, and the replica waits to lead again. Returns
/// on shutdown, once `run` has stopped (or [`STOP_TIMEOUT`] after).
async fn lead_with<Run, Running>(
    election: &mut Election,
    shutdown: &Shutdown,
    readiness: &Readiness,
    mut run: Run,
) -> Result<(), StartError>
where
    Run: FnMut(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> Running,
    Running: Future<Output = ()>,
{
    let mut leadership = election.leadership.clone();
    loop {
        tokio::select! {
            () = leadership.acquired() => {}
            () = shutdown.wait() => return Ok(()),
            ended = election.ended() => {
                shutdown.trigger();
                return Err(StartError::ElectionEnded(ended));
            }
        }
        // A status computed from half-filled caches would be wrong; they sync in seconds.
        tokio::select! {
            () = readiness.wait_for(&[Part::WatchesSynced, Part::PodsSynced]) => {}
            () = shutdown.wait() => return Ok(()),
            () = leadership.lost() => continue,
        }
        tracing::info!("leading: starting the controller");
        let overdue = {
            let stopping = shutdown.wait();
            async move {
                stopping.await;
                tokio::time::sleep(STOP_TIMEOUT).await;
            }
        };
        tokio::select! {
            () = run(Box::pin(shutdown.wait())) => return Ok(()),
            () = overdue => {
                tracing::warn!("reconciles still running {STOP_TIMEOUT:?} after shutdown; leaving them");
                return Ok(());
            }
            () = leadership.lost() => {
                tracing::warn!("not the leader any more: the controller stopped; the webhook serves on");
            }
        }
    }
}

/// Stops in order: the lease is released (the controller has stopped), then the elector and
/// the servers get [`STOP_TIMEOUT`] to finish.
pub async fn stop(
    shutdown: &Shutdown,
    election: Election,
    servers: impl IntoIterator<Item = Server>,
) {
    shutdown.trigger();
    // Let a successor take over without waiting for the lease to expire.
    let _ = election.release.send(());
    let stopping = async {
        let _ = election.elector.await;
        for server in servers {
            server.stopped().await;
        }
    };
    if tokio::time::timeout(STOP_TIMEOUT, stopping).await.is_err() {
        tracing::warn!("shutdown took longer than {STOP_TIMEOUT:?}; exiting anyway");
    }
    tracing::info!("stopped");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Term {
        Started(u32),
        Stopped(u32),
    }

    /// Says that its term stopped when the controller's future is dropped or ends.
    struct Stops(mpsc::UnboundedSender<Term>, u32);

    impl Drop for Stops {
        fn drop(&mut self) {
            let _ = self.0.send(Term::Stopped(self.1));
        }
    }

    async fn next(terms: &mut mpsc::UnboundedReceiver<Term>) -> Term {
        tokio::time::timeout(Duration::from_secs(5), terms.recv())
            .await
            .expect("the controller started or stopped")
            .expect("the leading task is alive")
    }

    #[tokio::test]
    async fn a_lost_lease_stops_the_controller_and_leading_again_restarts_it() {
        let (leader, leadership) = Leadership::channel();
        let (release, _released) = oneshot::channel();
        let mut election = Election {
            leadership,
            identity: "me".into(),
            elector: tokio::spawn(std::future::pending()),
            release,
        };
        let readiness = Readiness::default();
        readiness.set(Part::WatchesSynced);
        readiness.set(Part::PodsSynced);
        let shutdown = Shutdown::default();
        let (sender, mut terms) = mpsc::unbounded_channel();
        let leading = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let mut term = 0;
                lead_with(&mut election, &shutdown, &readiness, |stopping| {
                    term += 1;
                    let stops = Stops(sender.clone(), term);
                    let _ = sender.send(Term::Started(term));
                    async move {
                        let _stops = stops;
                        stopping.await;
                    }
                })
                .await
            }
        });

        leader.send_replace(true);
        assert_eq!(next(&mut terms).await, Term::Started(1));
        leader.send_replace(false);
        assert_eq!(next(&mut terms).await, Term::Stopped(1));
        assert!(!leading.is_finished(), "losing the lease ended the process");

        leader.send_replace(true);
        assert_eq!(next(&mut terms).await, Term::Started(2));
        shutdown.trigger();
        assert_eq!(next(&mut terms).await, Term::Stopped(2));
        tokio::time::timeout(Duration::from_secs(5), leading)
            .await
            .expect("returns on shutdown")
            .unwrap()
            .expect("a shutdown is no error");
    }
}
