//! The ProcessWatch controller. A reconcile reads the pod cache and the latest findings,
//! builds the status ([`status`], [`conditions`], [`crate::budget`]), evicts the next old pod
//! when asked ([`crate::eviction`]), publishes Events for what changed ([`events`]) and writes
//! the status with server-side apply when it changed, at most about once per watch per
//! second. Reconciles are requested by ProcessWatch changes, by pod changes and by report
//! arrivals ([`triggers`]), and repeated every interval so silent agents are noticed.

pub mod conditions;
pub mod events;
pub mod namespaces;
pub mod status;
pub mod triggers;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller, Error as ControllerError};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use procwatch_crds::constants::FIELD_MANAGER;
use procwatch_crds::{AttachMode, ExistingPods, ProcessWatch, ProcessWatchStatus};
use sha2::{Digest, Sha256};

use crate::errors::Chain;
use crate::eviction::{self, Decision};
use crate::expectations;
use crate::lock;
use crate::metrics::{self, EvictionResult, Metrics, Outcome, StatusWrite};
use crate::pod_security::{Enforced, Namespaces};
use crate::report::store::{FindingsStore, WatchKey};
use events::{Change, Membership};
use namespaces::PodNames;
use triggers::Triggers;

/// Status writes per watch are at least this far apart; reports in between are coalesced.
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// After our own write, the cached object may lag; what we wrote counts as current this long.
const TRUST_OWN_WRITE: Duration = Duration::from_secs(10);
/// While an eviction proceeds, look again this soon.
const EVICTION_RECHECK: Duration = Duration::from_secs(5);
/// A PodDisruptionBudget said no: ask again after this.
const EVICTION_RETRY: Duration = Duration::from_secs(10);
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(300);
/// While the API server refuses the full status, it is offered again after this, doubling with
/// each refusal in a row up to `MAX_ERROR_BACKOFF`; a reduced status is written meanwhile.
const REFUSED_RETRY: Duration = Duration::from_secs(30);
/// The API server's message is cut to this many bytes in the condition and the event.
const REFUSAL_MESSAGE_BYTES: usize = 1024;
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(30);
/// Watches reconciled at once. Building a status is CPU work that holds the watch's listed
/// findings several times over in memory; more at once than the cores can build only raises the
/// memory peak (a burst of new pods wakes every watch).
const MAX_CONCURRENT_RECONCILES: u16 = 4;

#[derive(Clone, Debug)]
pub struct Settings {
    pub status_budget_bytes: usize,
    pub min_write_interval: Duration,
}

pub struct Context {
    pub client: Client,
    pub pods: Store<Pod>,
    /// The names of the cached pods by namespace.
    pub pod_names: PodNames,
    /// The Pod Security level each namespace enforces (may forbid the ptrace agent).
    pub namespaces: Namespaces,
    pub findings: FindingsStore,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub memory: Arc<Memory>,
    pub settings: Settings,
    /// When this replica became the leader: its findings start empty then.
    pub leading_since: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the status of ProcessWatch {namespace}/{name}")]
    WriteStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reconcile took longer than {0:?}; the API server is slow or unreachable")]
    Timeout(Duration),
    #[error("cannot evict pod {namespace}/{pod}")]
    Evict {
        namespace: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// What this process remembers per watch between reconciles; rebuilt from scratch at each
/// term of leadership, so nothing here is needed for correctness, only to avoid needless writes and
/// repeated events.
#[derive(Default)]
pub struct Memory(Mutex<HashMap<(String, String), WatchMemory>>);

#[derive(Default)]
struct WatchMemory {
    uid: Option<String>,
    written: Option<(StatusDigest, Instant)>,
    members: Option<Membership>,
    /// The pod evicted last (name, uid, when), until no pod is left to evict.
    evicted: Option<(String, String, Instant)>,
    /// The last eviction refused (by a PodDisruptionBudget): not asked again before
    /// `EVICTION_RETRY`, however often the watch is reconciled meanwhile.
    blocked: Option<Blocked>,
    failures: u32,
    /// The API server refused the full status, until it accepts one again.
    refusal: Option<Refusal>,
    /// What `spec.expect`, drift and churn saw last.
    expectations: expectations::Memory,
}

/// The API server refused the full status: its message, when, and how many times in a row.
struct Refusal {
    message: String,
    at: Instant,
    in_a_row: u32,
    /// The message an event has named, so each distinct message is announced once.
    announced: bool,
}

impl Refusal {
    /// How long the full status is still held back, if at all.
    fn holds_back(&self) -> Option<Duration> {
        let backoff = REFUSED_RETRY
            .saturating_mul(1 << self.in_a_row.saturating_sub(1).min(8))
            .min(MAX_ERROR_BACKOFF);
        backoff
            .checked_sub(self.at.elapsed())
            .filter(|left| !left.is_zero())
    }
}

/// How much of the status a write carries: all of it, or less once the API server refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    Full,
    /// Counts, summary and conditions.
    WithoutPods,
    /// Counts and conditions.
    CountsOnly,
}

impl Detail {
    fn less(self) -> Option<Detail> {
        match self {
            Detail::Full => Some(Detail::WithoutPods),
            Detail::WithoutPods => Some(Detail::CountsOnly),
            Detail::CountsOnly => None,
        }
    }

    /// `status` with only this much detail. What a refused write held is the start of the next
    /// try (the byte budget never cuts the summary), so the full status is never copied.
    pub fn of(self, mut status: ProcessWatchStatus) -> ProcessWatchStatus {
        if self != Detail::Full {
            status.pods.clear();
        }
        if self == Detail::CountsOnly {
            status.summary.clear();
        }
        status
    }
}

/// The API server's message, cut on a character boundary.
fn refusal_message(response: &kube::core::Status) -> String {
    let message = response.message.trim();
    if message.len() <= REFUSAL_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut end = REFUSAL_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Why a status write failed: the content was refused (400, 422, also by an admission
/// webhook), or anything else (the server unreachable, no permission, a conflict).
enum WriteFailure {
    Refused(kube::Error),
    Other(kube::Error),
}

#[derive(Clone)]
struct Blocked {
    pod: String,
    why: String,
    at: Instant,
}

/// What the eviction step did, for the rest of the reconcile.
#[derive(Default)]
struct EvictionStep {
    requeue: Option<Duration>,
    change: Option<Change>,
    failure: Option<Error>,
}

impl Memory {
    fn with<R>(&self, watch: &ProcessWatch, f: impl FnOnce(&mut WatchMemory) -> R) -> R {
        let key = (watch.namespace().unwrap_or_default(), watch.name_any());
        let mut all = lock(&self.0);
        let memory = all.entry(key).or_default();
        // A watch deleted and created again under the same name starts afresh.
        if memory.uid != watch.metadata.uid {
            *memory = WatchMemory {
                uid: watch.metadata.uid.clone(),
                ..WatchMemory::default()
            };
        }
        f(memory)
    }

    /// Drops what is remembered of a deleted watch.
    pub fn forget(&self, namespace: &str, name: &str) {
        lock(&self.0).remove(&(namespace.to_string(), name.to_string()));
    }

    /// Forgets every watch: a new term of leadership starts from what the API server says.
    pub fn clear(&self) {
        lock(&self.0).clear();
    }

    /// Keeps only these watches (namespace, name): after a relist, deletions are not events.
    pub fn retain(&self, watches: &HashSet<(String, String)>) {
        lock(&self.0).retain(|key, _| watches.contains(key));
    }
}

/// Whether to write the status now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Unchanged,
    /// Changed, but the last write was too recent: try again after this.
    Defer(Duration),
    Now,
}

/// What this replica remembers of a status it wrote: its digest, which is all that comparing
/// needs, not a copy of up to 256 KiB of JSON (and several times that in memory) per watch.
/// Both sides are statuses this replica built, so their conditions come in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusDigest([u8; 32]);

impl StatusDigest {
    pub fn of(status: &ProcessWatchStatus) -> Self {
        struct Hashing(Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.update(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut hashing = Hashing(Sha256::new());
        // Writing into a hasher cannot fail, nor can serializing a status.
        let _ = serde_json::to_writer(&mut hashing, status);
        StatusDigest(hashing.0.finalize().into())
    }
}

/// Whether two statuses say the same, their conditions in any order (the API server may return
/// them in another). Compared in place: a status is up to 256 KiB of JSON and several times
/// that in memory, and this runs on every reconcile.
fn same_status(a: &ProcessWatchStatus, b: &ProcessWatchStatus) -> bool {
    // Every field named, so that a new one cannot be left out.
    let ProcessWatchStatus {
        observed_generation,
        conditions,
        selected_pods,
        attached_pods,
        reporting_pods,
        processes,
        needs_restart,
        opted_out,
        summary,
        violations,
        pods,
    } = a;
    *observed_generation == b.observed_generation
        && *selected_pods == b.selected_pods
        && *attached_pods == b.attached_pods
        && *reporting_pods == b.reporting_pods
        && *processes == b.processes
        && *needs_restart == b.needs_restart
        && *opted_out == b.opted_out
        && *summary == b.summary
        && *violations == b.violations
        && conditions.len() == b.conditions.len()
        && conditions.iter().all(|condition| {
            b.conditions.iter().find(|c| c.type_ == condition.type_) == Some(condition)
        })
        && *pods == b.pods
}

/// Skips a write when the status is what the object has, or what we wrote a moment ago (the
/// cached object may not show it yet), and keeps writes `min_interval` apart.
///
/// `takeover_left` is what remains of the first `stale_after` of this replica's leadership:
/// its findings start empty, so until agents have had time to report again a status that
/// counts fewer reporting pods than the current one is held back, instead of flapping
/// `Reporting` and `Ready` on every failover.
pub fn write_decision(
    new: &ProcessWatchStatus,
    current: Option<&ProcessWatchStatus>,
    written: Option<&(StatusDigest, Instant)>,
    min_interval: Duration,
    takeover_left: Option<Duration>,
    now: Instant,
) -> Write {
    let recent = written.filter(|(_, at)| now.duration_since(*at) < TRUST_OWN_WRITE);
    if current.is_some_and(|current| same_status(current, new))
        || recent.is_some_and(|(digest, _)| *digest == StatusDigest::of(new))
    {
        return Write::Unchanged;
    }
    let knows_less = current.is_some_and(|current| {
        current.observed_generation == new.observed_generation
            && new.reporting_pods < current.reporting_pods
    });
    if let Some(left) = takeover_left.filter(|_| knows_less && written.is_none()) {
        return Write::Defer(left);
    }
    match written.map(|(_, at)| now.duration_since(*at)) {
        Some(since) if since < min_interval => Write::Defer(min_interval - since),
        _ => Write::Now,
    }
}

/// How often a watch is looked at without any event: once per interval, so agents that fall
/// silent are noticed, within bounds.
fn requeue_after(watch: &ProcessWatch) -> Duration {
    watch
        .spec
        .interval
        .as_duration()
        .clamp(Duration::from_secs(5), Duration::from_secs(300))
}

pub async fn reconcile(watch: Arc<ProcessWatch>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    // A request stuck on a slow API server would hold this watch's reconciles (and shutdown)
    // until the client's read timeout of almost five minutes.
    let result = match tokio::time::timeout(RECONCILE_TIMEOUT, apply(&watch, &ctx)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(RECONCILE_TIMEOUT)),
    };
    let outcome = if result.is_ok() {
        ctx.memory.with(&watch, |m| m.failures = 0);
        Outcome::Success
    } else {
        Outcome::Error
    };
    ctx.metrics.reconciled(outcome, started.elapsed());
    result
}

/// Retries a failed reconcile with a per-watch exponential backoff (2s, 4s, … 5 min).
pub fn error_policy(watch: Arc<ProcessWatch>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.memory.with(&watch, |m| {
        m.failures = m.failures.saturating_add(1);
        m.failures
    });
    let backoff = Duration::from_secs(1 << failures.min(9)).min(MAX_ERROR_BACKOFF);
    tracing::warn!(
        namespace = watch.namespace().unwrap_or_default(),
        watch = watch.name_any(),
        error = %Chain(error),
        retry_in = ?backoff,
        "reconcile failed"
    );
    Action::requeue(backoff)
}

async fn apply(watch: &ProcessWatch, ctx: &Context) -> Result<Action, Error> {
    let namespace = watch.namespace().unwrap_or_default();
    let name = watch.name_any();
    let now = Timestamp::now();
    let pods = ctx.pod_names.pods(&namespace, &ctx.pods);
    let selected = status::select(watch, &pods, |key| ctx.findings.get(key), now);
    let mut built = status::build(watch, &selected);
    ctx.findings.list(
        WatchKey::of(watch),
        std::mem::take(&mut built.listing),
        usize::try_from(watch.spec.report.max_pods).unwrap_or(usize::MAX),
    );
    if watch.spec.agent.ptrace {
        built.facts.ptrace_forbidden = Enforced::of(&ctx.namespaces, &namespace).ptrace_refusal();
    }
    let mut changes = Vec::new();
    let mut requeue = requeue_after(watch);
    let mut failure = None;

    let evicting = watch.spec.attach.mode == AttachMode::Sidecar
        && watch.spec.attach.existing_pods == ExistingPods::Evict
        && built.facts.invalid_spec.is_none();
    if evicting {
        let step = evict_next(ctx, watch, &selected, &mut built.facts).await;
        if let Some(after) = step.requeue {
            requeue = requeue.min(after);
        }
        changes.extend(step.change);
        failure = step.failure;
    }

    let mut status = built.status;
    let mut facts = built.facts;
    ctx.metrics
        .set_containers(&namespace, &name, &built.figures);
    changes.extend(judge(ctx, watch, &selected, &built.assessment, &mut status));

    let members = Membership {
        attached: selected
            .iter()
            .filter(|p| p.attached && !p.terminating)
            .map(|p| p.name())
            .collect(),
        needs_restart: facts.without_agent.iter().cloned().collect(),
        opted_out: selected
            .iter()
            .filter(|p| p.opted_out && !p.attached && !p.terminating)
            .map(|p| p.name())
            .collect(),
    };
    let before = ctx
        .memory
        .with(watch, |m| m.members.replace(members.clone()));
    changes.extend(events::pod_changes(before.as_ref(), &members));

    // A refused full status is held back for a while: the reduced one is written meanwhile.
    let mut detail = Detail::Full;
    let held_back = ctx.memory.with(watch, |m| {
        let refusal = m.refusal.as_ref()?;
        Some((refusal.message.clone(), refusal.holds_back()?))
    });
    if let Some((message, left)) = held_back {
        detail = Detail::WithoutPods;
        facts.status_rejected = Some(message);
        requeue = requeue.min(left);
    }
    let previous = watch.status.as_ref();
    let takeover_left = status::stale_after(watch).checked_sub(ctx.leading_since.elapsed());
    loop {
        let new_status = finish(ctx, watch, detail.of(status), &facts, now);
        let written = ctx.memory.with(watch, |m| m.written);
        match write_decision(
            &new_status,
            previous,
            written.as_ref(),
            ctx.settings.min_write_interval,
            takeover_left.filter(|left| !left.is_zero()),
            Instant::now(),
        ) {
            Write::Unchanged => ctx.metrics.status_write(StatusWrite::Unchanged),
            Write::Defer(wait) => {
                ctx.metrics.status_write(StatusWrite::Deferred);
                requeue = requeue.min(wait);
            }
            Write::Now => match write_status(ctx, watch, &new_status).await {
                Ok(()) => {
                    changes.extend(events::readiness_change(previous, &new_status));
                    changes.extend(events::ptrace_change(previous, &new_status));
                    ctx.memory.with(watch, |m| {
                        m.written = Some((StatusDigest::of(&new_status), Instant::now()));
                        if detail == Detail::Full {
                            m.refusal = None;
                        }
                    });
                }
                Err(WriteFailure::Refused(source)) => {
                    let message = match &source {
                        kube::Error::Api(response) => refusal_message(response),
                        other => other.to_string(),
                    };
                    tracing::warn!(%namespace, watch = %name, ?detail, %message, "the API server refused the status");
                    if let Some(announce) = refused(ctx, watch, detail, &message) {
                        changes.push(announce);
                    }
                    if detail == Detail::Full {
                        requeue = requeue.min(REFUSED_RETRY);
                    }
                    facts.status_rejected = Some(message);
                    match detail.less() {
                        Some(less) => {
                            detail = less;
                            status = new_status;
                            continue;
                        }
                        None => {
                            failure = Some(Error::WriteStatus {
                                namespace: namespace.clone(),
                                name: name.clone(),
                                source,
                            })
                        }
                    }
                }
                Err(WriteFailure::Other(source)) => {
                    failure = Some(Error::WriteStatus {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })
                }
            },
        }
        break;
    }
    publish(ctx, watch, &changes).await;
    match failure {
        Some(error) => Err(error),
        None => Ok(Action::requeue(requeue)),
    }
}

/// What is new since the last reconcile in violations, drift and processes, as Events; the
/// churn figures go into `status` (the listed pods' `pidsAllocated`) and the metrics.
fn judge(
    ctx: &Context,
    watch: &ProcessWatch,
    selected: &[status::SelectedPod],
    assessment: &expectations::Assessment,
    status: &mut ProcessWatchStatus,
) -> Vec<Change> {
    let reporting: Vec<(String, &crate::report::store::PodFindings)> = selected
        .iter()
        .filter(|p| p.attached && !p.terminating)
        .filter_map(|p| Some((p.name(), p.findings.as_deref()?)))
        // Churn compares whole reports; a compact one waits for the pod's next report.
        .filter(|(_, findings)| findings.detailed)
        .collect();
    let found = ctx.memory.with(watch, |m| {
        m.expectations
            .changes(assessment, &reporting, &watch.spec, Instant::now())
    });
    let previous = watch.status.as_ref().map_or(&[][..], |s| &s.pods[..]);
    for pod in &mut status.pods {
        if let Some(pids) = found.pids.get(&pod.name) {
            let shown = previous
                .iter()
                .find(|shown| shown.name == pod.name && shown.uid == pod.uid);
            (pod.pids_allocated, pod.pids_per_minute) =
                status::shown_pid_figures(shown, pod.reported_at.as_ref(), pids);
        }
    }
    let figures = metrics::expectations::Figures {
        violations: assessment.violation_counts().into_iter().collect(),
        file_variants: assessment
            .comparisons
            .iter()
            .map(|c| ((c.container.clone(), c.path.clone()), c.count()))
            .collect(),
        starts: found.starts.into_iter().collect(),
        pids: found
            .pids
            .into_iter()
            .map(|(pod, pids)| (pod, pids.since_last))
            .collect(),
    };
    ctx.metrics.expectations.record(
        &watch.namespace().unwrap_or_default(),
        &watch.name_any(),
        &figures,
    );
    found.news.into_iter().map(Change::from).collect()
}

/// `attach.existingPods: Evict`: evicts the next pod when the plan says so, and tells the
/// Attached condition what is going on.
async fn evict_next(
    ctx: &Context,
    watch: &ProcessWatch,
    selected: &[status::SelectedPod],
    facts: &mut status::Facts,
) -> EvictionStep {
    let namespace = watch.namespace().unwrap_or_default();
    let name = watch.name_any();
    let (evicted, blocked) = ctx
        .memory
        .with(watch, |m| (m.evicted.clone(), m.blocked.clone()));
    let last = evicted.map(|(pod, uid, at)| eviction::LastEviction {
        pod,
        uid,
        ago: at.elapsed(),
    });
    let plan = eviction::plan(
        watch.meta().creation_timestamp.as_ref(),
        selected,
        last.as_ref(),
    );
    facts.bare = plan.bare;
    let refused = |pod: &str, why: &str| {
        format!(
            "evicting {pod} is refused for now ({why}); retrying every {}s",
            EVICTION_RETRY.as_secs()
        )
    };
    let (pod, uid) = match plan.decision {
        Decision::Done => {
            ctx.memory.with(watch, |m| m.evicted = None);
            return EvictionStep::default();
        }
        Decision::Wait(why) => {
            facts.eviction = Some(why);
            return EvictionStep {
                requeue: Some(EVICTION_RECHECK),
                ..EvictionStep::default()
            };
        }
        Decision::Evict { name, uid } => (name, uid),
    };
    if let Some(blocked) = blocked.filter(|b| b.pod == pod && b.at.elapsed() < EVICTION_RETRY) {
        facts.eviction = Some(refused(&pod, &blocked.why));
        return EvictionStep {
            requeue: Some(EVICTION_RETRY - blocked.at.elapsed()),
            ..EvictionStep::default()
        };
    }
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &namespace);
    let outcome = eviction::evict(&api, &pod).await;
    ctx.memory.with(watch, |m| m.blocked = None);
    match outcome {
        Ok(eviction::Outcome::Evicted) => {
            tracing::info!(%namespace, watch = %name, %pod, "evicted a pod created before the watch");
            ctx.metrics.eviction(EvictionResult::Evicted);
            let evicted = (pod.clone(), uid, Instant::now());
            ctx.memory.with(watch, |m| m.evicted = Some(evicted));
            facts.eviction = Some(format!(
                "evicted {pod}, waiting for its replacement to be ready"
            ));
            EvictionStep {
                requeue: Some(EVICTION_RECHECK),
                change: Some(Change::PodEvicted(pod)),
                failure: None,
            }
        }
        Ok(eviction::Outcome::Blocked(why)) => {
            tracing::info!(%namespace, watch = %name, %pod, %why, "eviction refused for now");
            ctx.metrics.eviction(EvictionResult::Blocked);
            facts.eviction = Some(refused(&pod, &why));
            let blocked = Blocked {
                pod: pod.clone(),
                why: why.clone(),
                at: Instant::now(),
            };
            ctx.memory.with(watch, |m| m.blocked = Some(blocked));
            EvictionStep {
                requeue: Some(EVICTION_RETRY),
                change: Some(Change::EvictionBlocked { pod, why }),
                failure: None,
            }
        }
        Ok(eviction::Outcome::Gone) => EvictionStep {
            requeue: Some(EVICTION_RECHECK),
            ..EvictionStep::default()
        },
        Err(source) => {
            ctx.metrics.eviction(EvictionResult::Error);
            facts.eviction = Some(format!("evicting {pod} failed: {source}"));
            EvictionStep {
                failure: Some(Error::Evict {
                    namespace,
                    pod,
                    source,
                }),
                ..EvictionStep::default()
            }
        }
    }
}

/// Conditions from `facts`, then the byte budget.
fn finish(
    ctx: &Context,
    watch: &ProcessWatch,
    mut status: ProcessWatchStatus,
    facts: &status::Facts,
    now: Timestamp,
) -> ProcessWatchStatus {
    let previous = watch.status.as_ref();
    status.conditions = conditions::conditions(
        facts,
        watch.metadata.generation,
        previous.map_or(&[], |s| s.conditions.as_slice()),
        &status::whole_seconds(now),
    );
    let cuts = crate::budget::fit(&mut status, ctx.settings.status_budget_bytes);
    if cuts.any() {
        tracing::debug!(
            namespace = watch.namespace(),
            watch = watch.name_any(),
            ?cuts,
            "status cut to its byte budget"
        );
    }
    if !cuts.fits {
        tracing::warn!(
            namespace = watch.namespace(),
            watch = watch.name_any(),
            budget = ctx.settings.status_budget_bytes,
            "status exceeds its byte budget even without pod detail"
        );
    }
    status
}

/// Remembers a refusal of the status written with `detail`; returns the event that announces
/// it when its message is new.
fn refused(ctx: &Context, watch: &ProcessWatch, detail: Detail, message: &str) -> Option<Change> {
    ctx.metrics.status_write(StatusWrite::Rejected);
    ctx.memory.with(watch, |m| {
        let refusal = m.refusal.get_or_insert_with(|| Refusal {
            message: message.to_string(),
            at: Instant::now(),
            in_a_row: 0,
            announced: false,
        });
        if detail == Detail::Full {
            refusal.in_a_row = refusal.in_a_row.saturating_add(1);
            refusal.at = Instant::now();
        }
        if refusal.message != message {
            refusal.message = message.to_string();
            refusal.announced = false;
        }
        (!std::mem::replace(&mut refusal.announced, true))
            .then(|| Change::StatusRejected(message.to_string()))
    })
}

/// The server-side apply body of a status, serialized straight from the status (a
/// `serde_json::Value` of it would hold the whole status once more, as a tree).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<'a> {
    api_version: &'a str,
    kind: &'a str,
    status: &'a ProcessWatchStatus,
}

async fn write_status(
    ctx: &Context,
    watch: &ProcessWatch,
    status: &ProcessWatchStatus,
) -> Result<(), WriteFailure> {
    let namespace = watch.namespace().unwrap_or_default();
    let name = watch.name_any();
    let api = Api::<ProcessWatch>::namespaced(ctx.client.clone(), &namespace);
    let patch = Patch::Apply(StatusApply {
        api_version: &ProcessWatch::api_version(&()),
        kind: &ProcessWatch::kind(&()),
        status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&name, &params, &patch).await {
        Ok(_) => {
            ctx.metrics.status_write(StatusWrite::Applied);
            tracing::debug!(%namespace, watch = %name, "status written");
            Ok(())
        }
        // Deleted meanwhile: nothing left to write to.
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            tracing::debug!(%namespace, watch = %name, "watch deleted before its status was written");
            Ok(())
        }
        // The content: invalid for the schema (422), or refused by an admission webhook or as
        // malformed (400). Writing the same again would be refused again.
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 422) => {
            Err(WriteFailure::Refused(kube::Error::Api(status)))
        }
        Err(source) => {
            ctx.metrics.status_write(StatusWrite::Error);
            Err(WriteFailure::Other(source))
        }
    }
}

/// Events are best effort: a failure is logged, never fails the reconcile.
async fn publish(ctx: &Context, watch: &ProcessWatch, changes: &[Change]) {
    let reference = watch.object_ref(&());
    let namespace = watch.namespace().unwrap_or_default();
    for change in changes {
        if let Err(error) = ctx
            .recorder
            .publish(&change.event(&namespace), &reference)
            .await
        {
            tracing::warn!(%namespace, watch = watch.name_any(), %error, "cannot publish an event");
        }
    }
}

/// Runs the controller on every ProcessWatch until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    triggers: Triggers,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let watches = Api::<ProcessWatch>::all(ctx.client.clone());
    Controller::new(watches, watcher::Config::default().any_semantic())
        .with_config(controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .reconcile_on(triggers.stream())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((watch, _)) => {
                    tracing::trace!(namespace = ?watch.namespace, watch = %watch.name, "reconciled")
                }
                // The watch of ProcessWatches failed (CRD missing, no RBAC, API down); the
                // runtime retries with backoff.
                Err(ControllerError::QueueError(error)) => {
                    tracing::warn!(%error, "cannot watch ProcessWatches")
                }
                // Failures are logged by `error_policy`; a watch deleted before its turn is
                // nothing to report.
                Err(error) => tracing::debug!(%error, "reconcile not done"),
            }
        })
        .await;
}

#[cfg(test)]
mod status_schema_tests;
#[cfg(test)]
mod tests;
