//! The plain-HTTP side: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (caches synced and the HTTPS server listening).
//!
//! Readiness does not depend on leadership: a standby must be ready too, or a rolling update
//! would wait forever for a new pod that cannot lead while the old one holds the lease. A
//! standby serves the webhook and answers reports with 503, so agents retry and reach the
//! leader; `/readyz` says which role it has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use crate::leader::Leadership;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/readyz` waits for; the controller waits for the caches here too.
///
/// Cache readiness is set from the reflector streams (their first `InitDone`), not with
/// `Store::wait_until_ready`: that future keeps a single waker, so of several tasks waiting
/// at once (the webhook waits too) only one is woken.
#[derive(Debug, Default)]
pub struct Readiness {
    watches_synced: AtomicBool,
    pods_synced: AtomicBool,
    https_listening: AtomicBool,
    changed: Notify,
}

#[derive(Clone, Copy, Debug)]
pub enum Part {
    WatchesSynced,
    PodsSynced,
    HttpsListening,
}

impl Readiness {
    pub fn set(&self, part: Part) {
        self.flag(part).store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub fn is_set(&self, part: Part) -> bool {
        self.flag(part).load(Ordering::Acquire)
    }

    /// Resolves once every one of `parts` is set.
    pub async fn wait_for(&self, parts: &[Part]) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before checking, so a `set` in between is not missed.
            changed.as_mut().enable();
            if parts.iter().all(|part| self.is_set(*part)) {
                return;
            }
            changed.await;
        }
    }

    fn flag(&self, part: Part) -> &AtomicBool {
        match part {
            Part::WatchesSynced => &self.watches_synced,
            Part::PodsSynced => &self.pods_synced,
            Part::HttpsListening => &self.https_listening,
        }
    }

    /// What is not ready yet, in words.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (Part::WatchesSynced, "the ProcessWatch cache is not synced"),
            (Part::PodsSynced, "the pod cache is not synced"),
            (Part::HttpsListening, "the HTTPS servers are not listening"),
        ]
        .into_iter()
        .filter(|(part, _)| !self.is_set(*part))
        .map(|(_, what)| what)
        .collect()
    }
}

#[derive(Clone)]
pub struct HealthState {
    pub registry: Arc<Registry>,
    pub readiness: Arc<Readiness>,
    pub leadership: Leadership,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The size of the last metrics text, to size the next one: with per-container series of a
/// thousand pods it is megabytes, and growing it from empty copies it over and over (and leaves
/// each smaller buffer behind).
static LAST_METRICS_BYTES: AtomicUsize = AtomicUsize::new(0);

async fn metrics(State(state): State<HealthState>) -> Response {
    let mut text = String::with_capacity(LAST_METRICS_BYTES.load(Ordering::Relaxed) * 9 / 8);
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => {
            LAST_METRICS_BYTES.store(text.len(), Ordering::Relaxed);
            ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {error}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let missing = state.readiness.missing();
    if !missing.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join("; ")),
        )
            .into_response();
    }
    let role = if state.leadership.is_leader() {
        "leader"
    } else {
        "standby: reports are answered with 503 until this replica leads"
    };
    (StatusCode::OK, format!("ready ({role})\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn several_tasks_can_wait_for_the_caches() {
        let readiness = Arc::new(Readiness::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let readiness = readiness.clone();
                tokio::spawn(async move {
                    readiness
                        .wait_for(&[Part::WatchesSynced, Part::PodsSynced])
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        readiness.set(Part::WatchesSynced);
        readiness.set(Part::PodsSynced);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("every waiter is woken")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn ready_once_caches_and_server_are_up() {
        let mut registry = Registry::default();
        let metrics = crate::metrics::Metrics::register(&mut registry);
        metrics.report(
            crate::metrics::ReportResult::Accepted,
            std::time::Duration::from_millis(1),
        );
        let readiness = Arc::new(Readiness::default());
        let (leader, leadership) = Leadership::channel();
        let app = router(HealthState {
            registry: Arc::new(registry),
            readiness: readiness.clone(),
            leadership,
        });

        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("pod cache"), "{body}");

        readiness.set(Part::WatchesSynced);
        readiness.set(Part::PodsSynced);
        readiness.set(Part::HttpsListening);
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("standby"));
        leader.send_replace(true);
        assert_eq!(get(&app, "/readyz").await.1, "ready (leader)\n");

        let (status, body) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#"procwatch_reports_total{result="accepted"} 1"#));
    }
}
