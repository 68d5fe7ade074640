//! The mutating admission webhook: on Pod CREATE, a pod selected by a ProcessWatch of its
//! namespace gets `shareProcessNamespace: true` and the procwatch agent.
//!
//! It fails open: every answer allows the pod. An internal error means the pod runs without
//! the agent (logged and counted), never that a workload is blocked.

mod injection;
mod patch;
mod quantity;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::ResourceExt;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use kube::runtime::reflector::Store;
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_crds::{AttachMode, ProcessWatch};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::health::{Part, Readiness};
use crate::pod_security::{Enforced, Namespaces};
use crate::selector;
use crate::tls::{CertificateHandle, MAX_REQUESTS_IN_FLIGHT};

use injection::MIN_TOKEN_EXPIRATION_SECONDS;
pub use patch::{Decision, InjectionError, Outcome, decide, declined, unsupported};

/// Path the API server posts AdmissionReviews to.
pub const MUTATE_PATH: &str = "/mutate";
/// How long a review waits for the first list of ProcessWatches after the operator starts;
/// well under the webhook's 5 s timeout.
const STORE_READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Far more than any real pod takes; a client cannot make the webhook hold more.
const MAX_REVIEW_BYTES: usize = 1024 * 1024;
/// A review's body is read within this, so a client trickling it holds a task no longer; the
/// API server's own webhook timeout is longer (5 s by default).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How the agent is injected; fixed for the operator's lifetime.
#[derive(Clone, Debug)]
pub struct InjectionSettings {
    pub agent_image: String,
    /// `IfNotPresent` normally; tests with locally imported images use `Never`.
    pub image_pull_policy: String,
    /// Full URL of the report endpoint, e.g. `https://127.0.0.1:9444/report/v1`.
    pub report_url: String,
    /// The API server runs native sidecars (1.29+): the agent is an init container with
    /// `restartPolicy: Always`, else a plain container.
    pub native_sidecars: bool,
    /// Lifetime of the projected token; the kubelet refreshes it at 80%. At least 600.
    pub token_expiration_seconds: i64,
}

impl InjectionSettings {
    /// Checks what the API server would otherwise refuse in every injected pod.
    pub fn validate(&self) -> Result<(), InjectionError> {
        if self.token_expiration_seconds < MIN_TOKEN_EXPIRATION_SECONDS {
            return Err(InjectionError::TokenExpirationTooShort(
                self.token_expiration_seconds,
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct AdmissionState {
    pub watches: Store<ProcessWatch>,
    /// Namespace labels: the Pod Security level each enforces.
    pub namespaces: Namespaces,
    /// Tells when `watches` is first listed ([`Part::WatchesSynced`]).
    pub readiness: Arc<Readiness>,
    pub settings: Arc<InjectionSettings>,
    /// The served certificate: its CA, read at each review, is what an injected agent trusts,
    /// so pods created after a CA rotation (cert-manager, a replaced Secret) trust the new one.
    pub certificate: CertificateHandle,
    pub metrics: Arc<AdmissionMetrics>,
}

/// The webhook's routes: `POST /mutate`, AdmissionReview v1 in and out.
pub fn router(state: AdmissionState) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .layer(GlobalConcurrencyLimitLayer::new(MAX_REQUESTS_IN_FLIGHT))
        // Outside the slots: a client trickling its body holds its connection, not a slot
        // that a review from the API server needs.
        .layer(middleware::from_fn(receive_review))
        .with_state(state)
}

/// Reads a review's whole body, at most [`MAX_REVIEW_BYTES`] within [`BODY_READ_TIMEOUT`],
/// before the request goes on.
async fn receive_review(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_REVIEW_BYTES),
    )
    .await
    {
        Ok(Ok(body)) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Ok(Err(error)) => {
            tracing::warn!(%error, "admission review not read");
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("an AdmissionReview takes at most {MAX_REVIEW_BYTES} bytes"),
            )
                .into_response()
        }
        Err(_) => {
            tracing::warn!("admission review body not read in time");
            (StatusCode::REQUEST_TIMEOUT, "body not sent in time").into_response()
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// Bounds of `procwatch_admission_duration_seconds`, in seconds: fine from 0.1 ms to 10 ms,
/// where a webhook in the path of every pod creation should answer (with a bound at 5 ms, so a
/// p99 near it is read, not interpolated across a doubling), coarse up to the API server's
/// 10 s webhook timeout.
const ADMISSION_BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// `procwatch_admissions_total{outcome}` and `procwatch_admission_duration_seconds`.
#[derive(Debug)]
pub struct AdmissionMetrics {
    admissions: Family<OutcomeLabels, Counter>,
    duration: Histogram,
}

impl AdmissionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let admissions = Family::<OutcomeLabels, Counter>::default();
        // Every outcome shows from the start, so rates work before the first error.
        for &outcome in Outcome::ALL {
            let _ = admissions.get_or_create(&OutcomeLabels { outcome });
        }
        registry.register(
            "procwatch_admissions",
            "Pod admission reviews answered by the webhook, by outcome",
            admissions.clone(),
        );
        let duration = Histogram::new(ADMISSION_BUCKETS.iter().copied());
        registry.register(
            "procwatch_admission_duration_seconds",
            "Time the webhook took to answer a pod admission review",
            duration.clone(),
        );
        AdmissionMetrics {
            admissions,
            duration,
        }
    }

    pub fn count(&self, outcome: Outcome, took: Duration) {
        self.admissions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.admissions
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }
}

/// Whether the API server runs native sidecars (init containers with `restartPolicy:
/// Always`), on by default since 1.29. Reads `major`/`minor` (`"30+"` on some providers) and
/// falls back to `gitVersion` (`v1.20.2`).
pub fn supports_native_sidecars(version: &Info) -> bool {
    let leading_number = |text: &str| -> Option<u32> {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let from_fields = leading_number(&version.major).zip(leading_number(&version.minor));
    let from_git = || {
        let mut parts = version.git_version.trim_start_matches('v').split('.');
        leading_number(parts.next()?).zip(leading_number(parts.next()?))
    };
    from_fields
        .or_else(from_git)
        .is_some_and(|(major, minor)| major > 1 || (major == 1 && minor >= 29))
}

/// Whether the pod runs the agent, as a container or a (sidecar) init container.
pub fn pod_has_agent(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == AGENT_CONTAINER_NAME)
    })
}

/// The watches of `namespace` whose selector matches `labels`, sorted by name. A watch with
/// a malformed selector selects nothing and is logged (the controller reports it in status).
pub fn watches_selecting<'a>(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    watches: impl IntoIterator<Item = &'a ProcessWatch>,
) -> Vec<&'a ProcessWatch> {
    let mut selected: Vec<&ProcessWatch> = watches
        .into_iter()
        .filter(|w| w.metadata.namespace.as_deref() == Some(namespace))
        .filter(|w| match selector::matches(&w.spec.selector, labels) {
            Ok(matched) => matched,
            Err(error) => {
                // Debug only: this runs for every admission and report, and the controller
                // already tells the user once, in the watch's Ready condition (InvalidSpec).
                tracing::debug!(
                    namespace,
                    watch = w.metadata.name.as_deref().unwrap_or_default(),
                    %error,
                    "watch has an invalid selector; it selects no pod"
                );
                false
            }
        })
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    selected
}

/// The selecting watches that want the agent injected at creation: sidecar mode, not being
/// deleted. Nothing attaches the agent to an Ephemeral-mode watch's pods yet; its Attached
/// condition says so.
fn injecting(watches: Vec<&ProcessWatch>) -> Vec<&ProcessWatch> {
    watches
        .into_iter()
        .filter(|w| w.spec.attach.mode == AttachMode::Sidecar)
        .filter(|w| w.metadata.deletion_timestamp.is_none())
        .collect()
}

#[derive(Debug, thiserror::Error)]
enum ReviewError {
    #[error("the review carries no object")]
    MissingObject,
    #[error("the review has no namespace")]
    MissingNamespace,
    #[error("ProcessWatches not yet listed after {0:?}")]
    StoreNotReady(Duration),
    #[error(transparent)]
    Injection(#[from] InjectionError),
    #[error("cannot encode the patch")]
    Patch(#[from] kube::core::admission::SerializePatchError),
}

/// Answers a review whose body [`receive_review`] has read.
async fn mutate(State(state): State<AdmissionState>, body: Bytes) -> Response {
    let started = Instant::now();
    // Typed: only a Pod's fields are read, nothing is copied as untyped JSON.
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => return bad_request(format!("malformed AdmissionReview: {error}")),
    };
    if review.types.kind != META_KIND || review.types.api_version != META_API_VERSION_V1 {
        return bad_request(format!(
            "expected kind {META_KIND} of {META_API_VERSION_V1}, got {} of {}",
            review.types.kind, review.types.api_version
        ));
    }
    let request: Result<AdmissionRequest<Pod>, _> = review.try_into();
    let Ok(request) = request else {
        return bad_request("AdmissionReview has no request".to_string());
    };
    let (outcome, response) = answer(&state, &request).await;
    let answer = axum::Json(with_base64_patch(response)).into_response();
    state.metrics.count(outcome, started.elapsed());
    answer
}

/// The review as JSON, with the patch as the base64 string the API documents. kube
/// serialises `Vec<u8>` as an array of numbers, which Go decoders happen to accept but the
/// AdmissionReview contract does not promise.
fn with_base64_patch(mut response: AdmissionResponse) -> serde_json::Value {
    // Taken out first, so it is neither copied nor written as numbers only to be replaced.
    let patch = response.patch.take();
    let mut review = serde_json::json!(response.into_review());
    if let Some(patch) = patch {
        review["response"]["patch"] = serde_json::json!(k8s_openapi::ByteString(patch));
    }
    review
}

fn bad_request(message: String) -> Response {
    tracing::warn!(%message, "refused admission review");
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// Always allows; adds the patch when there is one.
async fn answer(
    state: &AdmissionState,
    request: &AdmissionRequest<Pod>,
) -> (Outcome, AdmissionResponse) {
    let allow = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if !is_pod || request.operation != Operation::Create || request.sub_resource.is_some() {
        return (Outcome::Ignored, allow);
    }
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let result = review_pod(state, request).await.and_then(|decision| {
        let outcome = decision.outcome;
        let response = if decision.patch.0.is_empty() {
            allow.clone()
        } else {
            allow.clone().with_patch(decision.patch)?
        };
        Ok((outcome, response))
    });
    match result {
        Ok((outcome, response)) => {
            tracing::debug!(namespace, uid = %request.uid, outcome = outcome.as_str(), "pod admitted");
            (outcome, response)
        }
        Err(error) => {
            // As a `dyn Error`, so that the log line carries its causes too.
            let error = &error as &dyn std::error::Error;
            tracing::error!(namespace, uid = %request.uid, error, "pod admitted without the agent");
            (Outcome::Error, allow)
        }
    }
}

async fn review_pod(
    state: &AdmissionState,
    request: &AdmissionRequest<Pod>,
) -> Result<Decision, ReviewError> {
    let pod = request.object.as_ref().ok_or(ReviewError::MissingObject)?;
    // On CREATE the pod's own namespace is often still empty; the request's is authoritative.
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .filter(|ns| !ns.is_empty())
        .ok_or(ReviewError::MissingNamespace)?;
    // Not `Store::wait_until_ready`: it wakes only one of several reviews waiting at once.
    let watches_synced = state.readiness.wait_for(&[Part::WatchesSynced]);
    tokio::time::timeout(STORE_READY_TIMEOUT, watches_synced)
        .await
        .map_err(|_| ReviewError::StoreNotReady(STORE_READY_TIMEOUT))?;
    let all = state.watches.state();
    let watches = injecting(watches_selecting(
        namespace,
        pod.labels(),
        all.iter().map(Arc::as_ref),
    ));
    let ca_pem = state.certificate.material().ca_pem;
    let enforced = Enforced::of(&state.namespaces, namespace);
    let ptrace_allowed = enforced.allows_ptrace();
    let decision = decide(pod, &watches, &state.settings, &ca_pem, ptrace_allowed)?;
    let ptrace_wanted = watches.iter().any(|w| w.spec.agent.ptrace);
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    let watch_names: Vec<_> = watches
        .iter()
        .filter_map(|w| w.metadata.name.as_deref())
        .collect();
    match (decision.outcome, decision.reason) {
        (Outcome::Injected, _) if ptrace_wanted && !ptrace_allowed => {
            let why = enforced.ptrace_refusal().unwrap_or_default();
            tracing::info!(namespace, pod = name, watches = ?watch_names, why, "agent injected without ptrace");
        }
        (Outcome::Injected, _) => {
            tracing::info!(namespace, pod = name, watches = ?watch_names, "agent injected");
        }
        (_, Some(reason)) => {
            tracing::info!(namespace, pod = name, watches = ?watch_names, reason, "selected pod left without the agent");
        }
        _ => {}
    }
    Ok(decision)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use kube::api::ObjectMeta;
    use procwatch_crds::ProcessWatchSpec;

    pub const FAKE_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    /// Fresh serving material: a new CA, and a certificate for 127.0.0.1 signed by it.
    pub fn tls_material() -> crate::tls::TlsMaterial {
        let now = std::time::SystemTime::now();
        let ca = crate::tls::issue_ca(now).unwrap();
        let sans = crate::tls::Sans {
            dns_names: Vec::new(),
            ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        };
        crate::tls::issue_serving(&ca, &sans, now).unwrap()
    }

    pub fn settings(native_sidecars: bool) -> InjectionSettings {
        InjectionSettings {
            agent_image: "procwatch-agent:test".to_string(),
            image_pull_policy: "Never".to_string(),
            report_url: "https://127.0.0.1:9444/report/v1".to_string(),
            native_sidecars,
            token_expiration_seconds: 3600,
        }
    }

    /// A watch in namespace `shop` selecting `match_labels`.
    pub fn watch(name: &str, match_labels: &[(&str, &str)]) -> ProcessWatch {
        let spec: ProcessWatchSpec = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": match_labels.iter().cloned().collect::<BTreeMap<_, _>>()}
        }))
        .unwrap();
        ProcessWatch {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("shop".to_string()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{settings, tls_material, watch};
    use super::*;
    use crate::tls::reloadable_server_config;
    use axum::body::Body;
    use axum::http::Request;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::core::PartialObjectMeta;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    fn version(major: &str, minor: &str, git: &str) -> Info {
        Info {
            major: major.to_string(),
            minor: minor.to_string(),
            git_version: git.to_string(),
            ..Info::default()
        }
    }

    #[test]
    fn native_sidecars_from_1_29() {
        assert!(!supports_native_sidecars(&version("1", "20", "v1.20.2")));
        assert!(!supports_native_sidecars(&version("1", "28", "v1.28.3")));
        assert!(supports_native_sidecars(&version("1", "29", "v1.29.0")));
        assert!(supports_native_sidecars(&version(
            "1",
            "30+",
            "v1.30.2-eks-1"
        )));
        assert!(supports_native_sidecars(&version("", "", "v1.31.1")));
        assert!(!supports_native_sidecars(&version("", "", "v1.27.0+k3s1")));
        assert!(!supports_native_sidecars(&version("", "", "")));
    }

    #[test]
    fn selection_is_per_namespace_sorted_and_skips_bad_selectors() {
        let b = watch("b", &[("app", "nginx")]);
        let a = watch("a", &[]);
        let other_app = watch("c", &[("app", "redis")]);
        let mut elsewhere = watch("d", &[]);
        elsewhere.metadata.namespace = Some("other".to_string());
        let mut broken = watch("e", &[]);
        broken.spec.selector.match_expressions = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "app".to_string(),
                operator: "Equals".to_string(),
                values: None,
            },
        ]);
        let labels = BTreeMap::from([("app".to_string(), "nginx".to_string())]);
        let selected =
            watches_selecting("shop", &labels, [&b, &a, &other_app, &elsewhere, &broken]);
        let names: Vec<_> = selected
            .iter()
            .map(|w| w.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn only_sidecar_watches_inject() {
        let sidecar = watch("a", &[]);
        let mut ephemeral = watch("b", &[]);
        ephemeral.spec.attach.mode = AttachMode::Ephemeral;
        let names: Vec<_> = injecting(vec![&sidecar, &ephemeral])
            .iter()
            .map(|w| w.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a"]);
    }

    /// The state with these watches in its store, listed completely or not yet.
    fn state(watches: Vec<ProcessWatch>, listed: bool) -> AdmissionState {
        let (reader, mut writer) = store::<ProcessWatch>();
        writer.apply_watcher_event(&Event::Init);
        for w in watches {
            writer.apply_watcher_event(&Event::InitApply(w));
        }
        let readiness = Readiness::default();
        if listed {
            writer.apply_watcher_event(&Event::InitDone);
            readiness.set(Part::WatchesSynced);
        }
        AdmissionState {
            watches: reader,
            namespaces: store::<PartialObjectMeta<Namespace>>().0,
            readiness: Arc::new(readiness),
            settings: Arc::new(settings(false)),
            certificate: reloadable_server_config(&tls_material()).unwrap().1,
            metrics: Arc::new(AdmissionMetrics::register(&mut Registry::default())),
        }
    }

    fn review(labels: Value, operation: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "web-7c9d8-", "labels": labels},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}
                },
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        })
    }

    async fn post(state: &AdmissionState, body: String) -> (StatusCode, Vec<u8>) {
        let request = Request::post(MUTATE_PATH)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    #[test]
    fn admission_buckets_rise_and_bound_the_latency_goal() {
        assert!(ADMISSION_BUCKETS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(ADMISSION_BUCKETS.contains(&0.005), "a bound at 5 ms");
        assert_eq!(ADMISSION_BUCKETS.last(), Some(&10.0), "the webhook timeout");
    }

    /// The review's answer allows the pod and patches nothing.
    fn assert_allowed_unchanged(answer: &[u8]) {
        let answer: Value = serde_json::from_slice(answer).unwrap();
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());
    }

    #[tokio::test]
    async fn selected_pod_gets_a_json_patch_through_the_router() {
        let state = state(vec![watch("web", &[("app", "nginx")])], true);
        let body = review(json!({"app": "nginx"}), "CREATE");
        let (status, bytes) = post(&state, body.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let pod = patched_pod(&body, &answer);
        assert!(pod_has_agent(&pod));
        assert_eq!(pod.spec.unwrap().share_process_namespace, Some(true));
        assert_eq!(state.metrics.get(Outcome::Injected), 1);
    }

    /// The reviewed pod with the answer's patch (base64 JSON) applied, as the API server would.
    fn patched_pod(review: &Value, answer: &Value) -> Pod {
        let encoded: Vec<u8> = serde_json::from_value(json!({"b": answer["response"]["patch"]}))
            .map(|v: BTreeMap<String, k8s_openapi::ByteString>| v["b"].0.clone())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&encoded).unwrap();
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        serde_json::from_value(pod).unwrap()
    }

    /// The agent injected into a new pod labelled `app: nginx` in `shop`.
    async fn injected_agent(state: &AdmissionState) -> k8s_openapi::api::core::v1::Container {
        let body = review(json!({"app": "nginx"}), "CREATE");
        let (_, bytes) = post(state, body.to_string()).await;
        let pod = patched_pod(&body, &serde_json::from_slice(&bytes).unwrap());
        pod.spec
            .unwrap()
            .containers
            .into_iter()
            .find(|c| c.name == AGENT_CONTAINER_NAME)
            .unwrap()
    }

    /// The CA an injected agent is told to trust (`PROCWATCH_CA_PEM`).
    async fn injected_ca(state: &AdmissionState) -> String {
        let agent = injected_agent(state).await;
        let env = agent.env.unwrap_or_default();
        let ca = env
            .iter()
            .find(|e| e.name == procwatch_crds::constants::env::CA_PEM);
        ca.and_then(|e| e.value.clone()).unwrap()
    }

    #[tokio::test]
    async fn agents_trust_the_ca_served_when_their_pod_is_created() {
        let state = state(vec![watch("web", &[("app", "nginx")])], true);
        let before = state.certificate.material().ca_pem;
        assert_eq!(injected_ca(&state).await, before);

        let rotated = tls_material();
        assert!(state.certificate.replace(rotated.clone()).unwrap());
        assert_ne!(rotated.ca_pem, before);
        assert_eq!(injected_ca(&state).await, rotated.ca_pem);
    }

    /// `shop` in the namespace cache, enforcing `level` (or nothing).
    fn namespace_enforcing(level: Option<&str>) -> Namespaces {
        let (reader, mut writer) = store::<PartialObjectMeta<Namespace>>();
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some("shop".into());
        ns.metadata.labels = level.map(|l| {
            BTreeMap::from([(
                crate::pod_security::ENFORCE_LABEL.to_string(),
                l.to_string(),
            )])
        });
        writer.apply_watcher_event(&Event::Apply(ns));
        reader
    }

    #[tokio::test]
    async fn the_ptrace_agent_is_injected_only_where_pod_security_allows_it() {
        let mut tracing = watch("web", &[("app", "nginx")]);
        tracing.spec.agent.ptrace = true;
        for (level, want) in [
            (None, Some(vec!["SYS_PTRACE".to_string()])),
            (Some("privileged"), Some(vec!["SYS_PTRACE".to_string()])),
            (Some("baseline"), None),
            (Some("restricted"), None),
        ] {
            let mut state = state(vec![tracing.clone()], true);
            state.namespaces = namespace_enforcing(level);
            let agent = injected_agent(&state).await;
            let caps = agent.security_context.unwrap().capabilities.unwrap();
            assert_eq!(caps.add, want, "{level:?}");
        }
    }

    #[tokio::test]
    async fn unselected_pod_is_allowed_without_patch() {
        let state = state(vec![watch("web", &[("app", "nginx")])], true);
        let (status, bytes) = post(
            &state,
            review(json!({"app": "redis"}), "CREATE").to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_allowed_unchanged(&bytes);
        assert_eq!(state.metrics.get(Outcome::SkippedNotSelected), 1);
    }

    #[tokio::test]
    async fn updates_are_ignored() {
        let state = state(vec![watch("web", &[])], true);
        let (_, bytes) = post(&state, review(json!({}), "UPDATE").to_string()).await;
        assert_allowed_unchanged(&bytes);
        assert_eq!(state.metrics.get(Outcome::Ignored), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unlisted_watches_fail_open_and_count_an_error() {
        let state = state(vec![watch("web", &[])], false);
        let (status, bytes) = post(&state, review(json!({}), "CREATE").to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_allowed_unchanged(&bytes);
        assert_eq!(state.metrics.get(Outcome::Error), 1);
    }

    #[tokio::test]
    async fn reviews_waiting_together_for_the_first_list_all_go_on() {
        let mut state = state(vec![watch("web", &[])], true);
        state.readiness = Arc::default();
        let reviews: Vec<_> = (0..3)
            .map(|_| {
                let state = state.clone();
                let body = review(json!({}), "CREATE").to_string();
                tokio::spawn(async move { post(&state, body).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        state.readiness.set(Part::WatchesSynced);
        for review in reviews {
            assert_eq!(review.await.unwrap().0, StatusCode::OK);
        }
        assert_eq!(state.metrics.get(Outcome::Injected), 3);
    }

    #[tokio::test]
    async fn a_review_over_one_mebibyte_is_refused_unread() {
        let state = state(vec![watch("web", &[])], true);
        let mut big = review(json!({}), "CREATE");
        big["request"]["object"]["metadata"]["annotations"] =
            json!({"big": "x".repeat(MAX_REVIEW_BYTES)});
        let (status, _) = post(&state, big.to_string()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// More trickling clients than request slots: a review from the API server is still
    /// answered at once, long before the trickled bodies time out.
    #[tokio::test(start_paused = true)]
    async fn trickled_bodies_take_no_request_slot() {
        let state = state(vec![watch("web", &[])], true);
        let webhook = router(state);
        let trickles: Vec<_> = (0..MAX_REQUESTS_IN_FLIGHT + 10)
            .map(|_| {
                let never = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
                let request = Request::post(MUTATE_PATH)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(never))
                    .unwrap();
                tokio::spawn(webhook.clone().oneshot(request))
            })
            .collect();
        // Every trickle is waiting for its body by the time the clock moves.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let request = Request::post(MUTATE_PATH)
            .header("content-type", "application/json")
            .body(Body::from(review(json!({}), "CREATE").to_string()))
            .unwrap();
        let response = webhook.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            trickles.iter().all(|trickle| !trickle.is_finished()),
            "answered while every trickled body was still awaited"
        );
        for trickle in trickles {
            let response = trickle.await.unwrap().unwrap();
            assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_times_out() {
        let state = state(vec![watch("web", &[])], true);
        let never = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let request = Request::post(MUTATE_PATH)
            .header("content-type", "application/json")
            .body(Body::from_stream(never))
            .unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[tokio::test]
    async fn a_review_of_something_else_than_a_pod_is_a_bad_request() {
        let state = state(vec![watch("web", &[])], true);
        let mut not_a_pod = review(json!({}), "CREATE");
        not_a_pod["request"]["object"]["spec"] = json!({"containers": "nginx"});
        let (status, _) = post(&state, not_a_pod.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn malformed_reviews_are_bad_requests() {
        let state = state(vec![], true);
        let (status, message) = post(&state, "{not json".to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            String::from_utf8(message)
                .unwrap()
                .contains("malformed AdmissionReview")
        );

        let mut no_request = review(json!({}), "CREATE");
        no_request.as_object_mut().unwrap().remove("request");
        let (status, _) = post(&state, no_request.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let mut v1beta1 = review(json!({}), "CREATE");
        v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let (status, _) = post(&state, v1beta1.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
