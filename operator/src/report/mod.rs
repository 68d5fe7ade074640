//! The report endpoint, `POST /report/v1`: an agent posts its pod's findings with its projected
//! token as bearer. The token is reviewed ([`auth`]), the report must be about the token's
//! pod, its containers are named from the pod the operator watches ([`response`]), the
//! findings are kept as the pod's latest ([`store`]) and every watch selecting the pod is
//! reconciled when the report changed what it shows ([`store::Kept`]). The answer tells the
//! agent what to collect next.
//!
//! The report is in the protocol's own types ([`procwatch_crds::report`]), converted into status
//! types here ([`convert`]); a report of a version outside
//! [`procwatch_crds::report::ACCEPTED_VERSIONS`] gets a 400 whose JSON body says which versions
//! are accepted.
//!
//! Refusals: 401 without or with an unaccepted token, 403 for another pod's report or a token
//! not bound to a pod, 413 over the size limit, 400 for malformed JSON or another version, 503 with
//! `Retry-After` on a standby replica, when the token cannot be reviewed now, when the pod
//! is not in the cache yet, or beyond the endpoint's [`capacity`].

pub mod auth;
pub mod capacity;
pub mod convert;
pub mod response;
pub mod store;
pub mod throttle;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use procwatch_crds::ProcessWatch;
use procwatch_crds::constants::REPORT_PATH;
use procwatch_crds::report::{AgentReport, ReportResponse, ReportVersion, UnsupportedVersion};
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::admission;
use crate::controller::triggers::Triggers;
use crate::leader::Leadership;
use crate::metrics::{Metrics, ReportResult};
use crate::tls::MAX_REQUESTS_IN_FLIGHT;
use auth::{AuthError, Authenticator, Refusal};
use capacity::{Capacity, Overload};
use store::{FindingsStore, PodFindings, PodKey};
use throttle::{LogBudget, Peer};

/// Refusals logged: a flood of bad tokens must not become a flood of log lines.
static REFUSAL_LOG: LogBudget = LogBudget::new(10, std::time::Duration::from_secs(60));

/// Default body limit, shared with the agent: a full report of 200 processes per container is
/// well under this.
pub const DEFAULT_MAX_REPORT_BYTES: usize = procwatch_crds::report::DEFAULT_MAX_REPORT_BYTES;
/// Seconds an agent is asked to wait before retrying a 503.
const RETRY_AFTER_SECONDS: u64 = 2;
/// An oversized body is still read, and dropped, up to this much: an HTTP/1.1 client writes its
/// whole body before it reads the answer, and a server that closes the connection on unread
/// data makes it see a reset (EPIPE) instead of the 413. Only authenticated agents get here.
const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How long draining an oversized body may take.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct ReportState {
    pub authenticator: Arc<Authenticator>,
    pub watches: Store<ProcessWatch>,
    pub pods: Store<Pod>,
    pub findings: FindingsStore,
    pub triggers: Triggers,
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub capacity: Capacity,
}

/// `POST /report/v1`.
pub fn router(state: ReportState) -> Router {
    Router::new()
        .route(REPORT_PATH, post(report))
        // The handler enforces its own limit, after authentication.
        .layer(DefaultBodyLimit::disable())
        .layer(GlobalConcurrencyLimitLayer::new(MAX_REQUESTS_IN_FLIGHT))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error("this replica is on standby; retry (the leader accepts reports)")]
    NotLeader,
    #[error("missing bearer token")]
    NoToken,
    #[error(transparent)]
    Refused(Refusal),
    #[error("the token cannot be reviewed now; retry")]
    AuthUnavailable(#[source] kube::Error),
    #[error("too many tokens under review; retry")]
    AuthBusy,
    #[error("too many refused reports from this address; retry later")]
    Throttled,
    #[error("report body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot read the report body")]
    Body(#[source] axum::Error),
    #[error("malformed report")]
    Malformed(#[source] serde_json::Error),
    #[error("{}", .0.message)]
    UnsupportedVersion(UnsupportedVersion),
    #[error(transparent)]
    OtherPod(auth::ClaimsError),
    #[error("pod {0} is not in the operator's cache yet; retry")]
    PodUnknown(String),
    #[error(transparent)]
    Overloaded(Overload),
}

impl ReportError {
    fn result(&self) -> ReportResult {
        match self {
            ReportError::NotLeader
            | ReportError::AuthUnavailable(_)
            | ReportError::AuthBusy
            | ReportError::PodUnknown(_) => ReportResult::Unavailable,
            ReportError::Overloaded(_) => ReportResult::Overloaded,
            ReportError::NoToken
            | ReportError::Throttled
            | ReportError::Refused(Refusal::Unauthenticated(_)) => ReportResult::Unauthenticated,
            ReportError::Refused(Refusal::NotAPod(_)) | ReportError::OtherPod(_) => {
                ReportResult::Forbidden
            }
            ReportError::TooLarge(_) => ReportResult::TooLarge,
            ReportError::Body(_)
            | ReportError::Malformed(_)
            | ReportError::UnsupportedVersion(_) => ReportResult::Malformed,
        }
    }

    fn status(&self) -> StatusCode {
        if matches!(self, ReportError::Throttled) {
            return StatusCode::TOO_MANY_REQUESTS;
        }
        match self.result() {
            ReportResult::Unavailable | ReportResult::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ReportResult::Unauthenticated => StatusCode::UNAUTHORIZED,
            ReportResult::Forbidden => StatusCode::FORBIDDEN,
            ReportResult::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ReportResult::Malformed | ReportResult::Accepted | ReportResult::Unwatched => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match self {
            // The agent recognises this one by its JSON body, and logs it once.
            ReportError::UnsupportedVersion(refusal) => {
                (status, axum::Json(refusal)).into_response()
            }
            _ => (status, format!("{}\n", error_chain(&self))).into_response(),
        };
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            // What is left of a body past the drain limit is not read: do not reuse the
            // connection.
            StatusCode::PAYLOAD_TOO_LARGE => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

async fn report(
    State(state): State<ReportState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let source = peer.map(|Extension(Peer(address))| address);
    match handle(&state, source, &headers, body).await {
        Ok((result, answer)) => {
            state.metrics.report(result, started.elapsed());
            axum::Json(answer).into_response()
        }
        Err(error) => {
            state.metrics.report(error.result(), started.elapsed());
            match error.result() {
                ReportResult::Unavailable | ReportResult::Overloaded => {
                    tracing::debug!(error = error_chain(&error), "report deferred")
                }
                _ => {
                    if let Some(held_back) = REFUSAL_LOG.admit(std::time::Instant::now()) {
                        tracing::info!(
                            error = error_chain(&error),
                            ?source,
                            refusals_not_logged = held_back,
                            "report refused"
                        );
                    }
                }
            }
            error.into_response()
        }
    }
}

/// The error and its causes, `: `-separated, for the agent to read.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ReportError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut read = 0usize;
    if declared.is_some_and(|length| length > limit) {
        if declared.is_some_and(|length| length <= DRAIN_MAX_BYTES) {
            drain(body, read).await;
        }
        return Err(ReportError::TooLarge(limit));
    }
    let mut kept = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReportError::Body)?;
        if let Ok(data) = frame.into_data() {
            read += data.len();
            if read > limit {
                drain(body, read).await;
                return Err(ReportError::TooLarge(limit));
            }
            kept.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(kept))
}

/// Reads and drops the rest of a refused body, at most up to [`DRAIN_MAX_BYTES`] in all and
/// for [`DRAIN_TIMEOUT`], so the client gets to read the refusal.
async fn drain(mut body: Body, mut read: usize) {
    let drained = async {
        while read <= DRAIN_MAX_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained).await;
}

async fn handle(
    state: &ReportState,
    source: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(ReportResult, ReportResponse), ReportError> {
    // Findings kept by a standby would never reach a status: send the agent to the leader.
    if !state.leadership.is_leader() {
        return Err(ReportError::NotLeader);
    }
    let token = bearer(headers).ok_or(ReportError::NoToken)?;
    let identity = state
        .authenticator
        .authenticate(token, source)
        .await
        .map_err(|error| match error {
            AuthError::Refused(refusal) => ReportError::Refused(refusal),
            AuthError::Unavailable(error) => ReportError::AuthUnavailable(error),
            AuthError::Busy => ReportError::AuthBusy,
            AuthError::Throttled => ReportError::Throttled,
        })?;
    // Held until the report is handled: its body is in memory meanwhile.
    let _handling = state.capacity.enter().map_err(ReportError::Overloaded)?;
    let bytes = read_body(headers, body, state.max_body_bytes).await?;
    let ReportVersion { version } =
        serde_json::from_slice(&bytes).map_err(ReportError::Malformed)?;
    if let Some(refusal) = UnsupportedVersion::check(version) {
        return Err(ReportError::UnsupportedVersion(refusal));
    }
    let report: AgentReport = serde_json::from_slice(&bytes).map_err(ReportError::Malformed)?;
    auth::check_claims(&identity, &report).map_err(ReportError::OtherPod)?;

    let key = PodKey::new(&report.pod_namespace, &report.pod_name);
    let pod = state
        .pods
        .get(&ObjectRef::new(&report.pod_name).within(&report.pod_namespace))
        .filter(|pod| pod.metadata.uid.as_deref() == Some(report.pod_uid.as_str()))
        .ok_or_else(|| ReportError::PodUnknown(format!("{}/{}", key.namespace, key.name)))?;
    let all_watches = state.watches.state();
    let selecting = admission::watches_selecting(
        &key.namespace,
        pod.labels(),
        all_watches.iter().map(AsRef::as_ref),
    );
    if selecting.is_empty() {
        state.findings.remove(&key);
        tracing::debug!(pod = %key.name, namespace = %key.namespace, "report from a pod no watch selects");
        return Ok((ReportResult::Unwatched, response::unwatched(&pod)));
    }
    state
        .capacity
        .keeps(state.findings.contains(&key), state.findings.len())
        .map_err(ReportError::Overloaded)?;
    let containers = response::rename_containers(convert::containers(report.containers), &pod);
    tracing::debug!(
        pod = %key.name,
        namespace = %key.namespace,
        containers = containers.len(),
        watches = selecting.len(),
        "report accepted"
    );
    let kept = state.findings.keep(
        key,
        PodFindings {
            uid: report.pod_uid,
            received_at: Timestamp::now(),
            containers,
            skipped: convert::skipped(report.skipped),
            pids: report.pids,
            detailed: true,
        },
        selecting.iter().copied(),
    );
    state.triggers.fire(
        selecting
            .iter()
            .filter(|watch| kept.concerns(watch))
            .map(|watch| ObjectRef::from_obj(*watch)),
    );
    Ok((ReportResult::Accepted, response::merge(&selecting, &pod)))
}

#[cfg(test)]
mod tests;
