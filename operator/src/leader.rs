//! Leader election over a `coordination.k8s.io/v1` Lease, so two replicas never both write
//! status or evict pods. Every replica serves the webhook and keeps its caches warm; only the
//! leader runs the controller and accepts reports (a standby answers reports with 503 and
//! `Retry-After`, and the agent retries, reaching the leader through the Service).
//!
//! As in client-go, a lease held by another replica counts as expired when its record has not
//! changed for `leaseDurationSeconds` by this replica's own clock, so clock skew between nodes
//! does not matter. A leader that cannot renew within the renew deadline, or finds the lease
//! taken, steps down and stands by like any other replica, trying for the lease again: the
//! process keeps serving the webhook through an API server outage, and leads again once the
//! lease is its own.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::errors::Chain;

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique per process: pod name and a random suffix.
    pub identity: String,
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// A leader that has not renewed for this long steps down (less than the lease duration,
    /// so it stops before anyone else may take over).
    pub renew_deadline: Duration,
    /// How often a standby looks at the lease.
    pub retry_every: Duration,
    /// How long one lease call may take; a leader's call also ends by its renew deadline, so
    /// a stalled API server cannot keep a leader that a standby has replaced.
    pub call_timeout: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        LeaseSettings {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
            call_timeout: Duration::from_secs(4),
        }
    }
}

/// Why one look at the lease failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseCallError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("the API server did not answer within {0:?}")]
    TimedOut(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lost the leader lease {name}: another replica holds it")]
    TakenOver { name: String },
    #[error("lost the leader lease {name}: not renewed for {deadline:?}")]
    NotRenewed {
        name: String,
        deadline: Duration,
        #[source]
        source: LeaseCallError,
    },
}

/// Whether this replica leads, readable anywhere (report handler, readiness).
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A standby handle and the sender that flips it.
    pub fn channel() -> (watch::Sender<bool>, Leadership) {
        let (sender, receiver) = watch::channel(false);
        (sender, Leadership(receiver))
    }

    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once this replica leads; never, if the elector stopped first.
    pub async fn acquired(&mut self) {
        if self.0.wait_for(|leader| *leader).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when this replica stops leading (or the elector stopped).
    pub async fn lost(&mut self) {
        let _ = self.0.wait_for(|leader| !*leader).await;
    }
}

/// What a replica does after reading the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Create,
    Renew,
    /// Free or expired: take it, counting a transition.
    TakeOver,
    Follow {
        holder: String,
    },
}

/// The lease record as last seen, and when it was first seen like that by our clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    since: Instant,
}

/// Decides from the lease (if it exists) and what was observed before.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    observed: &mut Option<Observed>,
    default_duration: Duration,
    now: Instant,
) -> Step {
    let Some(spec) = lease else {
        *observed = None;
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let Some(holder_name) = holder.clone() else {
        return Step::TakeOver;
    };
    if holder_name == identity {
        return Step::Renew;
    }
    let unchanged = observed
        .as_ref()
        .is_some_and(|o| o.holder == holder && o.renew_time == spec.renew_time);
    if !unchanged {
        *observed = Some(Observed {
            holder,
            renew_time: spec.renew_time.clone(),
            since: now,
        });
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    let since = observed.as_ref().map_or(now, |o| o.since);
    if now.duration_since(since) >= duration {
        Step::TakeOver
    } else {
        Step::Follow {
            holder: holder_name,
        }
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Runs the election until `shutdown` resolves (then a held lease is released so a successor
/// takes over at once). A lost lease flips `leadership` back to standby, and the replica tries
/// for the lease again.
pub async fn run(
    leases: Api<Lease>,
    settings: LeaseSettings,
    leadership: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut observed = None;
    // Tokio's clock: the one the timeouts and pauses below run on.
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        let was_leader = *leadership.borrow();
        // A leader's time left before it must step down; nothing of it may be waited away.
        let deadline_left = last_renewal
            .filter(|_| was_leader)
            .map(|at| settings.renew_deadline.saturating_sub(at.elapsed()));
        let budget = deadline_left.map_or(settings.call_timeout, |left| {
            left.min(settings.call_timeout)
        });
        let leading = tokio::time::timeout(budget, try_once(&leases, &settings, &mut observed))
            .await
            .unwrap_or(Err(LeaseCallError::TimedOut(budget)));
        match leading {
            Ok(true) => {
                if !was_leader {
                    tracing::info!(lease = %settings.name, identity = %settings.identity, "became the leader");
                    leadership.send_replace(true);
                }
                last_renewal = Some(tokio::time::Instant::now());
            }
            Ok(false) if was_leader => {
                let lost = LeaderError::TakenOver {
                    name: settings.name.clone(),
                };
                step_down(&leadership, &lost, &mut last_renewal, &mut observed);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(lease = %settings.name, %error, "cannot read or update the leader lease");
                let overdue =
                    last_renewal.is_some_and(|at| at.elapsed() >= settings.renew_deadline);
                if was_leader && overdue {
                    let lost = LeaderError::NotRenewed {
                        name: settings.name.clone(),
                        deadline: settings.renew_deadline,
                        source: error,
                    };
                    step_down(&leadership, &lost, &mut last_renewal, &mut observed);
                }
            }
        }
        let pause = if *leadership.borrow() {
            let left = last_renewal.map(|at| settings.renew_deadline.saturating_sub(at.elapsed()));
            settings
                .renew_every
                .min(left.unwrap_or(settings.renew_every))
        } else {
            settings.retry_every
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut shutdown => {
                if *leadership.borrow() {
                    leadership.send_replace(false);
                    release(&leases, &settings).await;
                }
                return;
            }
        }
    }
}

/// Stops leading at once (another replica may lead already) and stands by: the holder seen
/// from now on gets a whole lease duration before it counts as gone.
fn step_down(
    leadership: &watch::Sender<bool>,
    lost: &LeaderError,
    last_renewal: &mut Option<tokio::time::Instant>,
    observed: &mut Option<Observed>,
) {
    tracing::warn!(error = %Chain(lost), "stepped down; serving on and trying for the lease again");
    leadership.send_replace(false);
    *last_renewal = None;
    *observed = None;
}

/// One look at the lease; true when this replica holds it afterwards.
async fn try_once(
    leases: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Option<Observed>,
) -> Result<bool, LeaseCallError> {
    let current = leases.get_opt(&settings.name).await?;
    let step = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &settings.identity,
        observed,
        settings.lease_duration,
        // Tokio's clock, as the loop's pauses: a lease expires by the same clock they run on.
        tokio::time::Instant::now().into_std(),
    );
    let result = match (step, current) {
        (Step::Create, _) => {
            let lease = new_lease(settings, now_micro());
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        (step @ (Step::Renew | Step::TakeOver), Some(mut lease)) => {
            if step == Step::TakeOver {
                tracing::info!(lease = %settings.name, "taking over the leader lease");
            }
            claim(&mut lease, &step, settings, now_micro());
            leases
                .replace(&settings.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        (Step::Follow { holder }, _) => {
            tracing::debug!(lease = %settings.name, %holder, "standing by");
            return Ok(false);
        }
        (Step::Renew | Step::TakeOver, None) => return Ok(false),
    };
    match result {
        Ok(()) => Ok(true),
        // Someone else wrote the lease in between (409 on replace or create): not ours.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

fn duration_seconds(settings: &LeaseSettings) -> i32 {
    i32::try_from(settings.lease_duration.as_secs()).unwrap_or(15)
}

/// A lease held by this replica from `now`, for a lease that does not exist yet.
fn new_lease(settings: &LeaseSettings, now: MicroTime) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            namespace: Some(settings.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(duration_seconds(settings)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// Renews `lease` at `now`, or (on [`Step::TakeOver`]) makes this replica its holder,
/// counting a transition.
fn claim(lease: &mut Lease, step: &Step, settings: &LeaseSettings, now: MicroTime) {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if *step == Step::TakeOver {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(duration_seconds(settings));
}

/// Gives the lease up on shutdown, so a successor need not wait for it to expire.
async fn release(leases: &Api<Lease>, settings: &LeaseSettings) {
    let released = async {
        let mut lease = leases.get(&settings.name).await?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        leases
            .replace(&settings.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    };
    match released.await {
        Ok(()) => tracing::info!(lease = %settings.name, "released the leader lease"),
        Err::<(), kube::Error>(error) => {
            tracing::warn!(lease = %settings.name, %error, "cannot release the leader lease; it expires by itself")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const TTL: Duration = Duration::from_secs(15);

    fn held_by(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn missing_free_and_own_leases() {
        let now = Instant::now();
        let mut observed = None;
        assert_eq!(decide(None, "me", &mut observed, TTL, now), Step::Create);
        assert_eq!(
            decide(Some(&held_by(None, 1)), "me", &mut observed, TTL, now),
            Step::TakeOver
        );
        assert_eq!(
            decide(Some(&held_by(Some(""), 1)), "me", &mut observed, TTL, now),
            Step::TakeOver
        );
        assert_eq!(
            decide(Some(&held_by(Some("me"), 1)), "me", &mut observed, TTL, now),
            Step::Renew
        );
    }

    #[test]
    fn another_holder_expires_by_our_clock_only() {
        let start = Instant::now();
        let mut observed = None;
        let mut look =
            |lease: &LeaseSpec, now: Instant| decide(Some(lease), "me", &mut observed, TTL, now);
        let other = held_by(Some("other"), 100);
        let follow = Step::Follow {
            holder: "other".into(),
        };
        // Its renew time is far in the past, yet only our own observation counts.
        assert_eq!(look(&other, start), follow);
        assert_eq!(look(&other, start + Duration::from_secs(14)), follow);
        // It renewed: the clock starts again.
        let renewed = held_by(Some("other"), 105);
        let later = start + Duration::from_secs(14);
        assert_eq!(look(&renewed, later), follow);
        assert_eq!(look(&renewed, later + Duration::from_secs(10)), follow);
        assert_eq!(
            look(&renewed, later + Duration::from_secs(15)),
            Step::TakeOver
        );
    }

    #[test]
    fn a_takeover_counts_a_transition_and_a_renewal_does_not() {
        let settings = LeaseSettings::new("ops".into(), "lease".into(), "me".into());
        let at = |second| MicroTime(Timestamp::from_second(second).unwrap());
        let mut lease = new_lease(&settings, at(1));
        let created = lease.spec.clone().unwrap();
        assert_eq!(created.holder_identity.as_deref(), Some("me"));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));

        claim(&mut lease, &Step::Renew, &settings, at(5));
        let renewed = lease.spec.clone().unwrap();
        assert_eq!(renewed.renew_time, Some(at(5)));
        assert_eq!(renewed.acquire_time, Some(at(1)));
        assert_eq!(renewed.lease_transitions, Some(0));

        lease.spec = Some(held_by(Some("other"), 7));
        claim(&mut lease, &Step::TakeOver, &settings, at(30));
        let taken = lease.spec.unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.acquire_time, Some(at(30)));
        assert_eq!(taken.renew_time, Some(at(30)));
        assert_eq!(taken.lease_transitions, Some(1));
    }

    /// An API server for one Lease: it stores what is created or replaced, and while
    /// `hanging` is set it never answers a GET (as during an outage).
    #[derive(Clone, Default)]
    struct FakeLeases(Arc<std::sync::Mutex<FakeLease>>);

    #[derive(Default)]
    struct FakeLease {
        lease: Option<serde_json::Value>,
        hanging: bool,
    }

    impl FakeLeases {
        fn set_hanging(&self, hanging: bool) {
            self.0.lock().unwrap().hanging = hanging;
        }

        /// Another replica writes the lease as its own, just renewed.
        fn taken_by(&self, holder: &str) {
            let mut state = self.0.lock().unwrap();
            let lease = state.lease.as_mut().expect("a lease exists");
            lease["spec"]["holderIdentity"] = holder.into();
            lease["spec"]["renewTime"] = "2030-01-01T00:00:00.000000Z".into();
        }

        fn client(&self) -> kube::Client {
            use http_body_util::BodyExt;
            use tower_test::mock;
            let (service, mut handle) = mock::pair::<
                http::Request<kube::client::Body>,
                http::Response<kube::client::Body>,
            >();
            let state = self.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Some((request, send)) = handle.next_request().await {
                    let respond = |code: u16, json: &serde_json::Value| {
                        http::Response::builder()
                            .status(code)
                            .body(kube::client::Body::from(json.to_string().into_bytes()))
                            .unwrap()
                    };
                    if *request.method() == http::Method::GET {
                        let state = state.0.lock().unwrap();
                        if state.hanging {
                            held.push(send);
                            continue;
                        }
                        let response = match &state.lease {
                            Some(lease) => respond(200, lease),
                            None => respond(
                                404,
                                &serde_json::json!({
                                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404
                                }),
                            ),
                        };
                        send.send_response(response);
                        continue;
                    }
                    let posted = request.into_body().collect().await.unwrap().to_bytes();
                    let lease: serde_json::Value = serde_json::from_slice(&posted).unwrap();
                    state.0.lock().unwrap().lease = Some(lease.clone());
                    send.send_response(respond(200, &lease));
                }
            });
            kube::Client::new(service, "ns")
        }

        fn elect(&self) -> (tokio::task::JoinHandle<()>, Leadership, LeaseSettings) {
            let settings = LeaseSettings::new("ns".into(), "lease".into(), "me".into());
            let (sender, leadership) = Leadership::channel();
            let elector = tokio::spawn(run(
                Api::namespaced(self.client(), "ns"),
                settings.clone(),
                sender,
                std::future::pending(),
            ));
            (elector, leadership, settings)
        }
    }

    /// The API server answers the first look (no lease; created), then every GET hangs:
    /// leadership drops by the renew deadline, before the lease could have passed to another.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_get_drops_leadership_within_the_renew_deadline() {
        let api = FakeLeases::default();
        let (elector, mut leadership, settings) = api.elect();
        leadership.acquired().await;
        let became_leader = tokio::time::Instant::now();
        api.set_hanging(true);
        tokio::time::timeout(settings.renew_deadline * 2, leadership.lost())
            .await
            .expect("leadership kept while every GET hangs");
        assert!(
            became_leader.elapsed() <= settings.renew_deadline,
            "leadership held {:?} past the last renewal",
            became_leader.elapsed()
        );
        assert!(!elector.is_finished(), "the elector gave up");
    }

    /// Through a 30 s outage the replica stands by, and it leads again once the API server
    /// answers: the lease still names it, so it renews at its first look.
    #[tokio::test(start_paused = true)]
    async fn after_an_outage_the_replica_leads_again() {
        let api = FakeLeases::default();
        let (elector, mut leadership, settings) = api.elect();
        leadership.acquired().await;
        api.set_hanging(true);
        leadership.lost().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!leadership.is_leader());
        api.set_hanging(false);
        let back = tokio::time::Instant::now();
        tokio::time::timeout(
            settings.retry_every + settings.call_timeout,
            leadership.acquired(),
        )
        .await
        .expect("leads again once the API server answers");
        assert!(back.elapsed() <= settings.retry_every + settings.call_timeout);
        assert!(!elector.is_finished());
    }

    /// Taken over, the replica stands by; when the new holder stops renewing, it takes the
    /// lease back after one lease duration by its own clock.
    #[tokio::test(start_paused = true)]
    async fn a_replica_taken_over_stands_by_and_takes_an_abandoned_lease_back() {
        let api = FakeLeases::default();
        let (elector, mut leadership, settings) = api.elect();
        leadership.acquired().await;
        api.taken_by("other");
        tokio::time::timeout(settings.renew_every * 2, leadership.lost())
            .await
            .expect("steps down when another replica holds the lease");
        let lost_at = tokio::time::Instant::now();
        tokio::time::timeout(settings.lease_duration * 2, leadership.acquired())
            .await
            .expect("takes the abandoned lease back");
        assert!(
            lost_at.elapsed() >= settings.lease_duration,
            "took the lease {:?} after another replica renewed it",
            lost_at.elapsed()
        );
        assert!(!elector.is_finished());
    }

    #[tokio::test]
    async fn leadership_handle_follows_the_sender() {
        let (sender, mut leadership) = Leadership::channel();
        assert!(!leadership.is_leader());
        sender.send_replace(true);
        leadership.acquired().await;
        assert!(leadership.is_leader());
        sender.send_replace(false);
        leadership.lost().await;
        assert!(!leadership.is_leader());
    }
}
