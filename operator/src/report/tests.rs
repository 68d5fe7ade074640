//! The report handler against a mocked API server that answers TokenReviews.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::report::store::PodFindings;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Client;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use procwatch_crds::ProcessWatch;
use procwatch_crds::constants::{REPORT_PATH, TOKEN_AUDIENCE};
use procwatch_crds::report::{self, AgentReport, ReportResponse, UnsupportedVersion};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_test::mock;

use super::*;
use crate::fixtures::{pod, watch};
use auth::tests::review_status;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A token that passes the cheap checks (a JWT with audience procwatch, a pod and a future
/// expiry) and that the fake API server reviews as `kind`, which it carries as its signature.
fn token(kind: &str) -> String {
    auth::tests::pod_jwt(kind.as_bytes())
}

/// Tokens the fake API server knows, by the kind they carry: `pod:<name>` is bound to that pod
/// of namespace shop, `user` is a person's token, anything else is refused.
fn review(token: &str) -> TokenReviewStatus {
    let signature = token.rsplit('.').next().unwrap_or_default();
    let kind = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    let kind = String::from_utf8_lossy(&kind);
    match kind.strip_prefix("pod:") {
        Some(pod) => review_status(
            "system:serviceaccount:shop:default",
            Some((pod, &format!("uid-{pod}"))),
        ),
        None if kind == "user" => review_status("alice", None),
        None => TokenReviewStatus {
            authenticated: Some(false),
            error: Some("invalid bearer token".into()),
            ..TokenReviewStatus::default()
        },
    }
}

struct Fixture {
    state: ReportState,
    reviews: Arc<AtomicUsize>,
    registry: Registry,
    leader: tokio::sync::watch::Sender<bool>,
}

fn fixture() -> Fixture {
    let (service, mut handle) =
        mock::pair::<Request<kube::client::Body>, http::Response<kube::client::Body>>();
    let reviews = Arc::new(AtomicUsize::new(0));
    let counted = reviews.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            assert_eq!(request.method(), http::Method::POST);
            assert_eq!(
                request.uri().path(),
                "/apis/authentication.k8s.io/v1/tokenreviews"
            );
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut asked: TokenReview = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                asked.spec.audiences.as_deref(),
                Some(&[TOKEN_AUDIENCE.to_string()][..])
            );
            counted.fetch_add(1, Ordering::SeqCst);
            asked.status = Some(review(asked.spec.token.as_deref().unwrap_or_default()));
            let answer = serde_json::to_vec(&asked).unwrap();
            send.send_response(http::Response::new(kube::client::Body::from(answer)));
        }
    });
    let client = Client::new(service, "default");

    let (watches, mut watch_writer) = reflector::store::<ProcessWatch>();
    watch_writer.apply_watcher_event(&watcher::Event::Apply(watch("web")));
    let (pods, mut pod_writer) = reflector::store::<Pod>();
    for name in ["web-1", "web-2"] {
        let mut pod = pod(name, "web", true);
        pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "nginx".into(),
            container_id: Some(format!("containerd://{name}-nginx")),
            ..ContainerStatus::default()
        }]);
        pod_writer.apply_watcher_event(&watcher::Event::Apply(pod));
    }
    pod_writer.apply_watcher_event(&watcher::Event::Apply(pod("lonely", "other", true)));

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let (leader, leadership) = crate::leader::Leadership::channel();
    leader.send_replace(true);
    let state = ReportState {
        authenticator: Arc::new(Authenticator::new(client, Duration::from_secs(60), 100)),
        watches,
        pods,
        findings: FindingsStore::default(),
        triggers: Triggers::default(),
        leadership,
        metrics,
        max_body_bytes: 64 * 1024,
        capacity: Capacity::default(),
    };
    Fixture {
        state,
        reviews,
        registry,
        leader,
    }
}

fn agent_report(pod: &str) -> AgentReport {
    AgentReport {
        pod_name: pod.into(),
        pod_namespace: "shop".into(),
        pod_uid: format!("uid-{pod}"),
        containers: vec![report::Container {
            // The agent did not know the name yet; the operator names it by ID.
            name: "containerd-web".into(),
            container_id: Some(format!("containerd://{pod}-nginx")),
            process_count: 1,
            processes: vec![report::Process {
                pid: 7,
                command: "nginx".into(),
                cpu_millicores: 2,
                ..report::Process::default()
            }],
            ..report::Container::default()
        }],
        agent_version: "test".into(),
        ..AgentReport::default()
    }
}

/// A version 1 report as the agent sent it before reports had their own types and a version:
/// `procwatch-agent snapshot --format json --environment redacted --libraries --file …` of a
/// PID namespace running socat on a TCP and a unix socket, with the pod's coordinates, the
/// container's ID and the agent version filled in as `run` fills them.
const GOLDEN_V1_REPORT: &str = include_str!("../../tests/fixtures/report-v1.json");

/// Posts `body` with a token of `kind` (see [`review`]).
async fn post(state: &ReportState, kind: Option<&str>, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    post_raw(state, kind.map(token).as_deref(), body).await
}

/// Posts `body` with exactly this bearer token.
async fn post_raw(
    state: &ReportState,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    post_from(state, None, token, body).await
}

/// Posts `body` with exactly this bearer token, from `peer` as the HTTPS server tells it.
async fn post_from(
    state: &ReportState,
    peer: Option<throttle::Peer>,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::post(REPORT_PATH).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut request = request.body(axum::body::Body::from(body)).unwrap();
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer);
    }
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

/// Posts the report of `pod` (as [`agent_report`] makes it) with `token`.
async fn post_report(state: &ReportState, token: &str, pod: &str) -> (StatusCode, Vec<u8>) {
    post(state, Some(token), json(&agent_report(pod))).await
}

fn json(report: &AgentReport) -> Vec<u8> {
    serde_json::to_vec(report).unwrap()
}

fn metric(registry: &Registry, result: &str) -> bool {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.contains(&format!("procwatch_reports_total{{result=\"{result}\"}} 1"))
}

#[tokio::test]
async fn accepted_report_is_kept_named_and_triggers_its_watches() {
    let fixture = fixture();
    let (status, body) = post_report(&fixture.state, "pod:web-1", "web-1").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: ReportResponse = serde_json::from_slice(&body).unwrap();
    assert!(answer.watched);
    assert_eq!(answer.interval_seconds, 10);
    assert_eq!(answer.containers.len(), 1);
    assert_eq!(answer.containers[0].name, "nginx");

    let kept = fixture
        .state
        .findings
        .get(&PodKey::new("shop", "web-1"))
        .unwrap();
    assert_eq!(kept.uid, "uid-web-1");
    assert_eq!(kept.containers[0].name, "nginx");
    assert_eq!(
        fixture.state.triggers.take(),
        [ObjectRef::new("web").within("shop")]
    );
    assert!(metric(&fixture.registry, "accepted"));

    // A second report within the cache lifetime costs no TokenReview.
    let (status, _) = post_report(&fixture.state, "pod:web-1", "web-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fixture.reviews.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn report_about_another_pod_is_forbidden() {
    let fixture = fixture();
    let (status, body) = post_report(&fixture.state, "pod:web-2", "web-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("issued to pod shop/web-2"));
    assert!(fixture.state.findings.is_empty());
    assert!(metric(&fixture.registry, "forbidden"));

    let (status, _) = post_report(&fixture.state, "user", "web-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a token not bound to a pod");
}

#[tokio::test]
async fn missing_or_refused_tokens_are_unauthenticated() {
    let fixture = fixture();
    let (status, _) = post(&fixture.state, None, json(&agent_report("web-1"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        fixture.reviews.load(Ordering::SeqCst),
        0,
        "no token, no review"
    );
    let (status, body) = post_report(&fixture.state, "garbage", "web-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("invalid bearer token"));
    assert!(fixture.state.findings.is_empty());
}

/// A flood of tokens that cannot be pod tokens of ours costs the API server nothing.
#[tokio::test]
async fn tokens_that_cannot_be_ours_are_refused_without_a_review() {
    let fixture = fixture();
    let claims = |payload: Value| {
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")
    };
    let far = i64::MAX / 2;
    let pod = json!({"pod": {"name": "web-1"}});
    let mut tokens: Vec<String> = (0..200).map(|i| format!("random-{i}")).collect();
    tokens.extend([
        claims(
            json!({"aud": ["https://kubernetes.default.svc"], "exp": far, "kubernetes.io": pod}),
        ),
        claims(json!({"aud": "procwatch", "exp": 1, "kubernetes.io": pod})),
        claims(json!({"aud": ["procwatch"], "exp": far})),
        claims(json!({"aud": ["procwatch"], "kubernetes.io": pod})),
    ]);
    for token in &tokens {
        let (status, body) =
            post_raw(&fixture.state, Some(token), json(&agent_report("web-1"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}");
        assert!(String::from_utf8_lossy(&body).contains("not reviewed"));
    }
    assert_eq!(fixture.reviews.load(Ordering::SeqCst), 0);
}

/// A source that keeps sending refused tokens is turned away unheard (429) for a while; an
/// agent at the same address whose token was accepted goes on.
#[tokio::test]
async fn a_flooding_address_is_throttled_but_accepted_tokens_go_on() {
    let fixture = fixture();
    let flood = Some(throttle::Peer(std::net::Ipv4Addr::LOCALHOST.into()));
    let report = || json(&agent_report("web-1"));
    let agent = token("pod:web-1");
    let (status, _) = post_from(&fixture.state, flood, Some(&agent), report()).await;
    assert_eq!(status, StatusCode::OK);
    let mut throttled = 0;
    for i in 0..100 {
        let (status, _) = post_from(
            &fixture.state,
            flood,
            Some(&token(&format!("bad-{i}"))),
            report(),
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            throttled += 1;
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    assert!(throttled >= 75, "{throttled} of 100 throttled");
    assert!(fixture.reviews.load(Ordering::SeqCst) <= 26);
    let (status, _) = post_from(&fixture.state, flood, Some(&agent), report()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the accepted agent is not throttled"
    );
    let elsewhere = Some(throttle::Peer(std::net::Ipv4Addr::new(127, 0, 0, 2).into()));
    let (status, _) = post_from(&fixture.state, elsewhere, Some(&token("bad-x")), report()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "other addresses are heard"
    );
}

/// The bound holds when the flood arrives all at once: requests that queued for a review slot
/// before the address ran out of refusals are not reviewed after it has.
#[tokio::test]
async fn a_flood_arriving_at_once_gets_no_more_reviews_than_the_bound() {
    let fixture = fixture();
    let flood = Some(throttle::Peer(std::net::Ipv4Addr::LOCALHOST.into()));
    let posts: Vec<_> = (0..200)
        .map(|i| {
            let state = fixture.state.clone();
            tokio::spawn(async move {
                post_from(
                    &state,
                    flood,
                    Some(&token(&format!("bad-{i}"))),
                    json(&agent_report("web-1")),
                )
                .await
                .0
            })
        })
        .collect();
    for post in posts {
        let status = post.await.unwrap();
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
            "{status}"
        );
    }
    let reviews = fixture.reviews.load(Ordering::SeqCst);
    let bound = throttle::REFUSALS_PER_WINDOW as usize + auth::MAX_REVIEWS_IN_FLIGHT;
    assert!(reviews <= bound, "{reviews} reviews (bound {bound})");
}

/// One review per token: an accepted token is not reviewed again while it lives.
#[tokio::test]
async fn an_accepted_token_is_reviewed_once() {
    let fixture = fixture();
    for _ in 0..5 {
        let (status, _) = post_report(&fixture.state, "pod:web-1", "web-1").await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(fixture.reviews.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn oversized_body_is_refused_with_a_message() {
    let fixture = fixture();
    let mut report = agent_report("web-1");
    report.containers[0].libraries = (0..10_000).map(|i| format!("/usr/lib/lib{i}.so")).collect();
    let (status, body) = post(&fixture.state, Some("pod:web-1"), json(&report)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&body).contains("larger than 65536 bytes"));
    assert!(fixture.state.findings.is_empty());
    assert!(metric(&fixture.registry, "too_large"));
}

/// The client of an oversized report reads the 413 only after it has written its body: the
/// handler reads (and drops) the rest instead of leaving it unread, with or without a declared
/// length.
#[tokio::test]
async fn oversized_body_is_read_to_the_end_before_the_refusal() {
    let fixture = fixture();
    for declared in [false, true] {
        let polled = Arc::new(AtomicUsize::new(0));
        let counter = polled.clone();
        // 200 KiB in 1 KiB chunks, over the fixture's 64 KiB limit.
        let chunks = futures::stream::iter(0..200).map(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 1024]))
        });
        let mut request = Request::post(REPORT_PATH)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", token("pod:web-1")));
        if declared {
            request = request.header("content-length", 200 * 1024);
        }
        let response = router(fixture.state.clone())
            .oneshot(request.body(axum::body::Body::from_stream(chunks)).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()["connection"], "close");
        assert_eq!(
            polled.load(Ordering::SeqCst),
            200,
            "declared length: {declared}"
        );
    }
    assert!(fixture.state.findings.is_empty());
}

#[tokio::test]
async fn malformed_body_is_a_bad_request_with_a_message() {
    let fixture = fixture();
    let (status, body) = post(
        &fixture.state,
        Some("pod:web-1"),
        b"{\"podName\": 3".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).starts_with("malformed report"));
    assert!(metric(&fixture.registry, "malformed"));
}

#[tokio::test]
async fn unwatched_pod_is_told_to_stop() {
    let fixture = fixture();
    let (status, body) = post_report(&fixture.state, "pod:lonely", "lonely").await;
    assert_eq!(status, StatusCode::OK);
    let answer: ReportResponse = serde_json::from_slice(&body).unwrap();
    assert!(!answer.watched);
    assert!(fixture.state.findings.is_empty());
}

#[tokio::test]
async fn standby_replica_sends_agents_elsewhere() {
    let fixture = fixture();
    fixture.leader.send_replace(false);
    let (status, _) = post_report(&fixture.state, "pod:web-1", "web-1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fixture.reviews.load(Ordering::SeqCst), 0);
    assert!(metric(&fixture.registry, "unavailable"));
}

/// Posts `body` as pod web-1's report, and returns what the operator kept of it.
async fn accepted_from_web_1(state: &ReportState, body: Vec<u8>) -> Arc<PodFindings> {
    let (status, answer) = post(state, Some("pod:web-1"), body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    state.findings.get(&PodKey::new("shop", "web-1")).unwrap()
}

#[tokio::test]
async fn a_version_1_report_from_an_older_agent_is_accepted_whole() {
    let fixture = fixture();
    let golden: Value = serde_json::from_str(GOLDEN_V1_REPORT).unwrap();
    assert!(golden.get("version").is_none(), "it predates the field");
    let kept = accepted_from_web_1(&fixture.state, GOLDEN_V1_REPORT.as_bytes().to_vec()).await;
    let nginx = &kept.containers[0];
    assert_eq!(nginx.name, "nginx");
    // Nothing the agent sent is lost on the way into the status types.
    let mut sent = golden["containers"][0].clone();
    sent["name"] = json!("nginx");
    assert_eq!(serde_json::to_value(nginx).unwrap(), sent);
    assert_eq!(nginx.processes.len(), 3);
    assert!(nginx.libraries.len() > 1);
    assert_eq!(nginx.files[0].path, "/tmp/golden/nginx.conf");
    assert!(
        nginx.processes[0]
            .environment
            .contains(&"API_TOKEN=<redacted>".to_string())
    );
    assert_eq!(nginx.listening.len(), 2);
}

#[tokio::test]
async fn fields_from_a_newer_agent_are_ignored() {
    let fixture = fixture();
    let mut newer = serde_json::to_value(agent_report("web-1")).unwrap();
    newer["kernel"] = json!({"release": "9.1"});
    newer["containers"][0]["gpuMillicores"] = json!(300);
    newer["containers"][0]["processes"][0]["cgroupPressure"] = json!([1, 2]);
    newer["containers"][0]["processes"][0]["state"] = json!("Parked");
    let kept = accepted_from_web_1(&fixture.state, serde_json::to_vec(&newer).unwrap()).await;
    let process = &kept.containers[0].processes[0];
    assert_eq!((process.pid, process.command.as_str()), (7, "nginx"));
    assert_eq!(process.state, procwatch_crds::ProcessState::Other);
}

#[tokio::test]
async fn a_version_outside_the_accepted_ones_is_refused_with_json() {
    let fixture = fixture();
    for version in [0, report::VERSION + 1] {
        let report = AgentReport {
            version,
            ..agent_report("web-1")
        };
        let (status, body) = post(&fixture.state, Some("pod:web-1"), json(&report)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let refusal: UnsupportedVersion = serde_json::from_slice(&body).unwrap();
        assert_eq!(refusal.version, version);
        assert_eq!(
            refusal.accepted,
            report::ACCEPTED_VERSIONS.collect::<Vec<_>>()
        );
        assert!(refusal.message.contains("not supported"), "{refusal:?}");
    }
    // A newer shape is refused for its version, not as malformed.
    let newer = json!({"version": report::VERSION + 1, "pods": [{"name": "web-1"}]});
    let (status, body) = post(
        &fixture.state,
        Some("pod:web-1"),
        serde_json::to_vec(&newer).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let refusal: UnsupportedVersion = serde_json::from_slice(&body).unwrap();
    assert_eq!(refusal.version, report::VERSION + 1);
    assert!(fixture.state.findings.is_empty());

    // The current version, said explicitly, is accepted.
    let current = AgentReport {
        version: report::VERSION,
        ..agent_report("web-1")
    };
    let (status, _) = post(&fixture.state, Some("pod:web-1"), json(&current)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn beyond_its_capacity_the_endpoint_sheds_reports_of_new_pods() {
    let mut fixture = fixture();
    fixture.state.capacity = Capacity::new(4, 1);
    let (status, _) = post_report(&fixture.state, "pod:web-1", "web-1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post_report(&fixture.state, "pod:web-2", "web-2").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("at most 1 pods; retry"), "{text}");
    assert!(metric(&fixture.registry, "overloaded"));
    assert!(
        fixture
            .state
            .findings
            .get(&PodKey::new("shop", "web-2"))
            .is_none()
    );
    // The pod already kept goes on reporting.
    let (status, _) = post_report(&fixture.state, "pod:web-1", "web-1").await;
    assert_eq!(status, StatusCode::OK);
}
