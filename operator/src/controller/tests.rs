//! The reconciler against a mocked API server (tower-test): what it sends for the cases a real
//! server cannot easily stage.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher;
use procwatch_crds::{ExistingPods, ProcessWatch, ProcessWatchStatus};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower_test::mock;

use super::*;
use crate::fixtures::{nginx, pod, process, watch};
use crate::report::store::{PodFindings, PodKey};
use conditions::tests::find;
use conditions::{ATTACHED, READY};

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: String,
    body: Value,
}

/// A fake API server: records every request, answers evictions with `eviction_code`, status
/// patches with the watch carrying the applied status, events by echoing them.
struct ApiServer {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ApiServer {
    fn start(watch: ProcessWatch, eviction_code: StatusCode) -> (Client, ApiServer) {
        Self::refusing(watch, eviction_code, |_| None)
    }

    /// Like `start`, but a status patch for which `refuse` gives a message is answered 422.
    fn refusing(
        watch: ProcessWatch,
        eviction_code: StatusCode,
        refuse: fn(&Value) -> Option<String>,
    ) -> (Client, ApiServer) {
        let (service, mut handle) =
            mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let uri = request.uri().to_string();
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                record.lock().unwrap().push(Seen {
                    method: method.clone(),
                    uri: uri.clone(),
                    body: body.clone(),
                });
                let (code, answer) = if uri.contains("/eviction") {
                    let status = serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": if eviction_code.is_success() { "Success" } else { "Failure" },
                        "message": if eviction_code.is_success() { "" } else { "Cannot evict pod as it would violate the pod's disruption budget." },
                        "reason": if eviction_code.is_success() { "" } else { "TooManyRequests" },
                        "code": eviction_code.as_u16(),
                    });
                    (eviction_code, status)
                } else if let Some(message) =
                    refuse(&body["status"]).filter(|_| uri.contains("/status"))
                {
                    let status = serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": message, "reason": "Invalid", "code": 422,
                    });
                    (StatusCode::UNPROCESSABLE_ENTITY, status)
                } else if uri.contains("/status") {
                    let mut answer = serde_json::to_value(&watch).unwrap();
                    answer["status"] = body["status"].clone();
                    (StatusCode::OK, answer)
                } else {
                    (StatusCode::CREATED, body)
                };
                let response = Response::builder()
                    .status(code)
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&answer).unwrap(),
                    ))
                    .unwrap();
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), ApiServer { seen })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn status_patches(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.uri.contains("/status"))
            .collect()
    }

    /// The status of the first status patch.
    fn first_status(&self) -> ProcessWatchStatus {
        serde_json::from_value(self.status_patches()[0].body["status"].clone()).unwrap()
    }

    fn events(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.uri.contains("events"))
            .collect()
    }

    fn evictions(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.uri.contains("/eviction"))
            .map(|s| s.uri)
            .collect()
    }
}

fn context(client: Client, pods: Vec<Pod>, findings: FindingsStore) -> Arc<Context> {
    let (store, mut writer) = reflector::store::<Pod>();
    let pod_names = PodNames::default();
    for pod in pods {
        pod_names.insert(&PodKey::of(&pod));
        writer.apply_watcher_event(&watcher::Event::Apply(pod));
    }
    let mut registry = Registry::default();
    Arc::new(Context {
        client: client.clone(),
        pods: store,
        pod_names,
        namespaces: reflector::store().0,
        findings,
        metrics: Arc::new(Metrics::register(&mut registry)),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "procwatch-operator".into(),
                instance: None,
            },
        ),
        memory: Arc::default(),
        settings: Settings {
            status_budget_bytes: crate::budget::DEFAULT_STATUS_BUDGET_BYTES,
            min_write_interval: MIN_WRITE_INTERVAL,
        },
        leading_since: Instant::now(),
    })
}

fn time(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

fn ready(mut pod: Pod) -> Pod {
    pod.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: "True".into(),
        ..PodCondition::default()
    }]);
    pod
}

fn old(mut pod: Pod, owned: bool) -> Pod {
    pod.metadata.creation_timestamp = Some(time(10));
    if owned {
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web-7c9d8".into(),
            uid: "rs-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
    }
    ready(pod)
}

fn evicting_watch() -> ProcessWatch {
    let mut watch = watch("web");
    watch.metadata.creation_timestamp = Some(time(1000));
    watch.spec.attach.existing_pods = ExistingPods::Evict;
    watch
}

#[tokio::test]
async fn status_is_applied_with_the_field_manager() {
    let watch = watch("web");
    let findings = FindingsStore::default();
    findings.insert(
        PodKey::new("shop", "web-1"),
        PodFindings {
            uid: "uid-web-1".into(),
            received_at: Timestamp::now(),
            containers: vec![nginx(
                vec![process(7, "nginx", 3), process(8, "nginx", 1)],
                "h",
            )],
            skipped: Default::default(),
            pids: None,
            detailed: true,
        },
    );
    let (client, server) = ApiServer::start(watch.clone(), StatusCode::CREATED);
    let ctx = context(client, vec![ready(pod("web-1", "web", true))], findings);

    let action = reconcile(Arc::new(watch.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));

    let patches = server.status_patches();
    assert_eq!(patches.len(), 1);
    let patch = &patches[0];
    assert_eq!(patch.method, Method::PATCH);
    assert_eq!(
        patch.uri,
        "/apis/procwatch.dev/v1alpha1/namespaces/shop/processwatches/web/status?&force=true&fieldManager=procwatch-operator"
    );
    assert_eq!(patch.body["apiVersion"], "procwatch.dev/v1alpha1");
    assert_eq!(patch.body["kind"], "ProcessWatch");
    let status: ProcessWatchStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(
        (
            status.selected_pods,
            status.attached_pods,
            status.reporting_pods,
            status.processes
        ),
        (1, 1, 1, 2)
    );
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.summary[0].container, "nginx");
    assert_eq!(status.summary[0].cpu_millicores, 4);
    assert_eq!(status.pods[0].containers[0].processes.len(), 2);
    let ready = find(&status.conditions, READY);
    assert_eq!(ready.status, "True", "{ready:?}");
    // Becoming ready is an Event on the watch.
    let events = server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["reason"], "Ready");
    assert_eq!(events[0].body["regarding"]["name"], "web");

    // Nothing changed: no second write.
    reconcile(Arc::new(watch), ctx).await.unwrap();
    assert_eq!(server.status_patches().len(), 1);
}

#[tokio::test]
async fn reports_of_the_same_findings_rewrite_nothing_until_reported_at_is_due() {
    let mut watch = watch("web");
    // Long enough for the first report to be a refresh old now and still count as reporting.
    watch.spec.interval = "5m".parse().unwrap();
    let findings = FindingsStore::default();
    let received = Timestamp::now() - status::reported_at_refresh(&watch);
    let report = |at: Timestamp| PodFindings {
        uid: "uid-web-1".into(),
        received_at: at,
        containers: vec![nginx(vec![process(7, "nginx", 3)], "h")],
        skipped: Default::default(),
        pids: None,
        detailed: true,
    };
    findings.insert(PodKey::new("shop", "web-1"), report(received));
    let pods = vec![ready(pod("web-1", "web", true))];
    let (client, server) = ApiServer::start(watch.clone(), StatusCode::CREATED);
    reconcile(
        Arc::new(watch.clone()),
        context(client.clone(), pods.clone(), findings.clone()),
    )
    .await
    .unwrap();
    assert_eq!(server.status_patches().len(), 1);

    // The cache shows the status written; a new replica's memory is empty, so only the
    // status itself can tell that nothing changed.
    watch.status = Some(server.first_status());
    let later = received + Duration::from_secs(3);
    findings.insert(PodKey::new("shop", "web-1"), report(later));
    let fresh = || context(client.clone(), pods.clone(), findings.clone());
    reconcile(Arc::new(watch.clone()), fresh()).await.unwrap();
    assert_eq!(
        server.status_patches().len(),
        1,
        "no write for a time alone"
    );

    let due = received + status::reported_at_refresh(&watch);
    findings.insert(PodKey::new("shop", "web-1"), report(due));
    reconcile(Arc::new(watch), fresh()).await.unwrap();
    let patches = server.status_patches();
    assert_eq!(patches.len(), 2);
    let written: ProcessWatchStatus =
        serde_json::from_value(patches[1].body["status"].clone()).unwrap();
    assert_eq!(
        written.pods[0].reported_at,
        Some(status::whole_seconds(due))
    );
}

#[tokio::test]
async fn owned_old_pods_are_evicted_bare_ones_never() {
    let watch = evicting_watch();
    let (client, server) = ApiServer::start(watch.clone(), StatusCode::CREATED);
    let pods = vec![
        old(pod("bare", "web", false), false),
        old(pod("web-old", "web", false), true),
    ];
    let ctx = context(client, pods, FindingsStore::default());

    let action = reconcile(Arc::new(watch.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(EVICTION_RECHECK));
    assert_eq!(
        server.evictions(),
        ["/api/v1/namespaces/shop/pods/web-old/eviction?"]
    );

    let status = server.first_status();
    assert_eq!(status.needs_restart, ["bare", "web-old"]);
    let attached = find(&status.conditions, ATTACHED);
    assert_eq!(attached.reason, "EvictingPods");
    assert!(
        attached.message.contains("bare has no controller"),
        "{}",
        attached.message
    );
    let evicted_event = server
        .events()
        .iter()
        .any(|s| s.body["reason"] == "PodEvicted");
    assert!(evicted_event);

    // The cache does not show web-old leaving yet: no second eviction.
    reconcile(Arc::new(watch), ctx).await.unwrap();
    assert_eq!(server.evictions().len(), 1);
}

#[tokio::test]
async fn eviction_refused_by_a_disruption_budget_is_retried_later() {
    let watch = evicting_watch();
    let (client, server) = ApiServer::start(watch.clone(), StatusCode::TOO_MANY_REQUESTS);
    let ctx = context(
        client,
        vec![old(pod("web-old", "web", false), true)],
        FindingsStore::default(),
    );

    let action = reconcile(Arc::new(watch.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(EVICTION_RETRY));
    assert_eq!(server.evictions().len(), 1);
    // Woken again at once (a report, its own status write): the budget is not asked again.
    reconcile(Arc::new(watch), ctx).await.unwrap();
    assert_eq!(server.evictions().len(), 1);
    let status = server.first_status();
    let attached = find(&status.conditions, ATTACHED);
    assert!(
        attached.message.contains("disruption budget"),
        "{}",
        attached.message
    );
}

#[test]
fn writes_are_skipped_when_unchanged_and_spaced_out() {
    let now = Instant::now();
    let a = ProcessWatchStatus {
        selected_pods: 1,
        ..ProcessWatchStatus::default()
    };
    let b = ProcessWatchStatus {
        selected_pods: 2,
        ..ProcessWatchStatus::default()
    };
    let second = Duration::from_secs(1);
    let decide = |new, current, written| write_decision(new, current, written, second, None, now);
    assert_eq!(decide(&a, Some(&a), None), Write::Unchanged);
    assert_eq!(decide(&a, None, None), Write::Now);
    // Our own write, not yet in the cache.
    let just_now = (StatusDigest::of(&a), now);
    assert_eq!(decide(&a, Some(&b), Some(&just_now)), Write::Unchanged);
    let ago = (StatusDigest::of(&b), now - Duration::from_millis(300));
    assert_eq!(
        decide(&a, Some(&b), Some(&ago)),
        Write::Defer(Duration::from_millis(700))
    );
    let long_ago = (StatusDigest::of(&b), now - Duration::from_secs(2));
    assert_eq!(decide(&a, Some(&b), Some(&long_ago)), Write::Now);
}

#[test]
fn statuses_are_the_same_whatever_the_order_of_their_conditions() {
    let condition =
        |type_: &str, status: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "Checked".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        };
    let ours = ProcessWatchStatus {
        conditions: vec![condition("Attached", "True"), condition("Ready", "True")],
        ..ProcessWatchStatus::default()
    };
    let mut returned = ours.clone();
    returned.conditions.reverse();
    assert!(same_status(&ours, &returned));
    returned.conditions[0].status = "False".into();
    assert!(!same_status(&ours, &returned));
    let mut fewer = ours.clone();
    fewer.conditions.pop();
    assert!(!same_status(&ours, &fewer));
    let mut more_pods = ours.clone();
    more_pods.selected_pods = 1;
    assert!(!same_status(&ours, &more_pods));
}

#[test]
fn a_new_leader_does_not_report_agents_missing_before_they_could_report() {
    let now = Instant::now();
    let reporting = |n| ProcessWatchStatus {
        reporting_pods: n,
        observed_generation: Some(1),
        ..ProcessWatchStatus::default()
    };
    let left = Some(Duration::from_secs(20));
    let second = Duration::from_secs(1);
    assert_eq!(
        write_decision(&reporting(1), Some(&reporting(3)), None, second, left, now),
        Write::Defer(Duration::from_secs(20))
    );
    // As much known as before, or the window is over, or the spec changed: write.
    assert_eq!(
        write_decision(&reporting(3), Some(&reporting(2)), None, second, left, now),
        Write::Now
    );
    assert_eq!(
        write_decision(&reporting(1), Some(&reporting(3)), None, second, None, now),
        Write::Now
    );
    let mut changed = reporting(0);
    changed.observed_generation = Some(2);
    assert_eq!(
        write_decision(&changed, Some(&reporting(3)), None, second, left, now),
        Write::Now
    );
}

fn reporting_web_1() -> FindingsStore {
    let findings = FindingsStore::default();
    findings.insert(
        PodKey::new("shop", "web-1"),
        PodFindings {
            uid: "uid-web-1".into(),
            received_at: Timestamp::now(),
            containers: vec![nginx(vec![process(7, "nginx", 3)], "h")],
            skipped: Default::default(),
            pids: None,
            detailed: true,
        },
    );
    findings
}

/// The message of a real 1.20 API server refusing a null where the schema wants a string.
const NULL_ARGS: &str = "ProcessWatch.procwatch.dev \"web\" is invalid: \
    status.pods.containers.processes.args: Invalid value: \"null\": must be of type string";

fn refuse_pod_detail(status: &Value) -> Option<String> {
    let has_pods = status["pods"]
        .as_array()
        .is_some_and(|pods| !pods.is_empty());
    has_pods.then(|| NULL_ARGS.to_string())
}

#[tokio::test]
async fn a_refused_status_is_written_again_without_the_pod_detail_and_said() {
    let watch = watch("web");
    let (client, server) = ApiServer::refusing(watch.clone(), StatusCode::OK, refuse_pod_detail);
    let ctx = context(
        client,
        vec![ready(pod("web-1", "web", true))],
        reporting_web_1(),
    );

    let action = reconcile(Arc::new(watch.clone()), ctx.clone())
        .await
        .expect("a refusal is handled, not a failure");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));

    let patches = server.status_patches();
    assert_eq!(patches.len(), 2, "the full status, then the reduced one");
    let reduced: ProcessWatchStatus =
        serde_json::from_value(patches[1].body["status"].clone()).unwrap();
    assert!(reduced.pods.is_empty(), "no pod detail");
    assert_eq!(
        (
            reduced.selected_pods,
            reduced.reporting_pods,
            reduced.processes
        ),
        (1, 1, 1),
        "the counts stay"
    );
    assert_eq!(reduced.summary[0].container, "nginx", "the summary stays");
    let ready = find(&reduced.conditions, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "StatusRejected")
    );
    assert!(
        ready.message.contains("must be of type string"),
        "{}",
        ready.message
    );

    let rejected: Vec<Seen> = server
        .events()
        .into_iter()
        .filter(|e| e.body["reason"] == "StatusRejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].body["type"], "Warning");
    assert!(rejected[0].body["note"].as_str().unwrap().contains("args"));

    // Reconciled again at once (a report arrives): the full status is held back, nothing new
    // is written or announced.
    reconcile(Arc::new(watch), ctx.clone()).await.unwrap();
    assert_eq!(server.status_patches().len(), 2);
    assert_eq!(
        server
            .events()
            .iter()
            .filter(|e| e.body["reason"] == "StatusRejected")
            .count(),
        1,
        "one event per distinct message"
    );
}

#[tokio::test]
async fn when_even_the_summary_is_refused_counts_and_conditions_are_written() {
    fn refuse_any_detail(status: &Value) -> Option<String> {
        let summary = status["summary"].as_array().is_some_and(|s| !s.is_empty());
        (refuse_pod_detail(status).is_some() || summary).then(|| NULL_ARGS.to_string())
    }
    let watch = watch("web");
    let (client, server) = ApiServer::refusing(watch.clone(), StatusCode::OK, refuse_any_detail);
    let ctx = context(
        client,
        vec![ready(pod("web-1", "web", true))],
        reporting_web_1(),
    );

    reconcile(Arc::new(watch), ctx).await.unwrap();
    let patches = server.status_patches();
    assert_eq!(patches.len(), 3);
    let last: ProcessWatchStatus =
        serde_json::from_value(patches[2].body["status"].clone()).unwrap();
    assert!(last.pods.is_empty() && last.summary.is_empty());
    assert_eq!(last.reporting_pods, 1);
    assert_eq!(find(&last.conditions, READY).reason, "StatusRejected");
}

#[test]
fn a_refused_status_is_offered_again_later_and_later() {
    let refusal = |in_a_row, ago| Refusal {
        message: NULL_ARGS.into(),
        at: Instant::now() - ago,
        in_a_row,
        announced: true,
    };
    let held = |in_a_row, ago| refusal(in_a_row, ago).holds_back().map(|d| d.as_secs() + 1);
    assert_eq!(held(1, Duration::ZERO), Some(30));
    assert_eq!(held(2, Duration::ZERO), Some(60));
    assert_eq!(held(9, Duration::ZERO), Some(300), "at most five minutes");
    assert_eq!(
        held(1, Duration::from_secs(31)),
        None,
        "then the full status again"
    );
}

#[test]
fn a_long_refusal_message_is_cut_on_a_character_boundary() {
    let status = kube::core::Status {
        message: "é".repeat(REFUSAL_MESSAGE_BYTES),
        code: 422,
        ..kube::core::Status::default()
    };
    let message = refusal_message(&status);
    assert!(message.len() <= REFUSAL_MESSAGE_BYTES + '…'.len_utf8());
    assert!(message.ends_with('…'));
}
