//! The procwatch operator deployed into the test cluster from `config/`, the way a user does it:
//! `kubectl apply -k config/overlays/loopback` (namespace, CRD, RBAC, Deployment, Service,
//! webhook configuration), so the manifests and RBAC are proven together with the code.
//!
//! ```no_run
//! use procwatch_e2e::{Cluster, Operator};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let cluster = Cluster::connect().await?;
//! let operator = Operator::deploy(&cluster).await?; // applied, Ready, caBundle in place
//! let ns = cluster.namespace("example").await?;     // declared after: dropped (deleted) first
//! // ... apply a ProcessWatch and pods in ns, wait for its status ...
//! ns.finish();
//! operator.finish(); // passed: removed without printing its logs
//! # Ok(()) }
//! ```
//!
//! One operator per cluster: `deploy` takes a lock (a file lock, so it holds across test threads
//! and test processes) that the returned [`Operator`] keeps until it is dropped; tests that use
//! the operator therefore run one after the other. `deploy` first removes whatever a previous
//! run left, then applies the overlay and waits until the operator pod is Ready and the webhook
//! configuration's `caBundle` is the CA of the Secret. Dropping the [`Operator`] prints the
//! operator's logs (current and previous containers) and the events of its namespace unless
//! [`Operator::finish`] was called, then removes everything the overlay created
//! (`kubectl delete -k`, waiting until the namespace and CRD are gone). `PROCWATCH_E2E_KEEP=1`
//! keeps a failed test's operator.
//!
//! The image is `localhost/procwatch:dev` (operator and agent), which `tests/run` builds; by
//! hand: `cargo build -p procwatch-operator -p procwatch-agent && tests/cluster/project-image
//! localhost/procwatch:dev target/debug/procwatch-operator target/debug/procwatch-agent`.
//!
//! The loopback overlay runs the operator on the host network: its report endpoint
//! ([`REPORT_URL`]) and metrics ([`METRICS_URL`]) are reachable from the test process.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};

use crate::cluster::{Cluster, cluster_dir, failed_and_kept, run_cleanup};
use crate::wait::{Wait, wait_for};

/// Namespace of the operator (config/manager/namespace.yaml).
pub const OPERATOR_NAMESPACE: &str = "procwatch-system";
/// Name of the operator's Deployment and its pods' label `app.kubernetes.io/name`.
pub const OPERATOR_DEPLOYMENT: &str = "procwatch-operator";
/// The Secret holding the operator's CA (`ca.crt`) and serving certificate.
pub const SERVING_SECRET: &str = "procwatch-serving-cert";
/// The MutatingWebhookConfiguration whose `caBundle` the operator keeps in step.
pub const WEBHOOK_CONFIGURATION: &str = "procwatch";
/// The CRD the overlay installs.
pub const CRD_NAME: &str = "processwatches.procwatch.dev";
/// The overlay the tests deploy, relative to the repository root.
pub const LOOPBACK_OVERLAY: &str = "config/overlays/loopback";
/// The report endpoint as the loopback overlay serves it (host network).
pub const REPORT_URL: &str = "https://127.0.0.1:9444/report/v1";
/// The metrics endpoint as the loopback overlay serves it (host network, plain HTTP).
pub const METRICS_URL: &str = "http://127.0.0.1:8080/metrics";
/// Its readiness, on the metrics port.
pub const READYZ_URL: &str = "http://127.0.0.1:8080/readyz";
/// The admission webhook the API server calls (the loopback overlay's webhook URL).
pub const ADMISSION_URL: &str = "https://127.0.0.1:9443/mutate";
/// The image the overlay runs (operator) and injects (agent).
pub const PROJECT_IMAGE: &str = "localhost/procwatch:dev";

/// How long `deploy` waits for the operator to become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long removal may take (namespace finalization, CRD deletion). The namespace controller
/// looks again only after the pods' grace period (30 s) while one is left; 27 s and 64 s were
/// measured.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(240);

/// The repository root (parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The operator, deployed; removed when dropped. See the module docs.
pub struct Operator {
    cluster: Cluster,
    overlay: PathBuf,
    finished: AtomicBool,
    /// Held until drop: one operator per cluster at a time. `None` for the temporary handle
    /// the drop itself uses, which removes nothing when dropped.
    lock: Option<File>,
}

impl Operator {
    /// Deploys the operator from [`LOOPBACK_OVERLAY`] and waits until it is Ready.
    pub async fn deploy(cluster: &Cluster) -> anyhow::Result<Operator> {
        Self::deploy_overlay(cluster, &repo_root().join(LOOPBACK_OVERLAY)).await
    }

    /// Deploys the operator from the kustomize directory `overlay` (which must keep the
    /// namespace, Deployment, Secret and webhook configuration names of `config/`).
    pub async fn deploy_overlay(cluster: &Cluster, overlay: &Path) -> anyhow::Result<Operator> {
        let lock = lock_cluster().await?;
        let t0 = Instant::now();
        warn_if_image_is_stale();
        let operator = Operator {
            cluster: cluster.clone(),
            overlay: overlay.to_path_buf(),
            finished: AtomicBool::new(false),
            lock: Some(lock),
        };
        // What a crashed or killed run left (it would keep an old image running, too).
        if operator.anything_installed().await? {
            eprintln!("procwatch-e2e: removing an operator left by an earlier run");
            operator.remove().await?;
        }
        let overlay_arg = operator.overlay.to_string_lossy().into_owned();
        let out = cluster
            .kubectl(&["apply", "-k", &overlay_arg])
            .await
            .context("deploying the operator")?;
        eprintln!("procwatch-e2e: applied {overlay_arg}:\n{}", out.trim());
        // From here on the guard removes what was applied, also if the wait fails.
        operator.wait_ready(READY_TIMEOUT).await?;
        eprintln!(
            "procwatch-e2e: operator deployed from {} and Ready in {:.1}s",
            operator.overlay.display(),
            t0.elapsed().as_secs_f64()
        );
        Ok(operator)
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The operator's pods (all, including terminating ones).
    pub async fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.client(), OPERATOR_NAMESPACE);
        let list = pods
            .list(
                &ListParams::default()
                    .labels(&format!("app.kubernetes.io/name={OPERATOR_DEPLOYMENT}")),
            )
            .await?;
        Ok(list.items)
    }

    /// Waits until the Deployment has rolled out, exactly one operator pod exists, is not
    /// terminating and is Ready, and the webhook configuration trusts the Secret's CA.
    /// Returns that pod. Fails early, with a hint, when the image is missing.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Pod> {
        let deployments: Api<Deployment> =
            Api::namespaced(self.cluster.client(), OPERATOR_NAMESPACE);
        let pod = wait_for("the operator pod Ready", timeout, || async {
            let deployment = deployments.get(OPERATOR_DEPLOYMENT).await?;
            let status = deployment.status.clone().unwrap_or_default();
            let pods = self.pods().await?;
            for pod in &pods {
                if let Some(problem) = image_problem(pod) {
                    // Not worth waiting for: no pull will ever bring it.
                    return Ok(Wait::Fail(anyhow::anyhow!(
                        "{problem}; build and import it: cargo build -p procwatch-operator \
                         -p procwatch-agent && tests/cluster/project-image {PROJECT_IMAGE} \
                         target/debug/procwatch-operator target/debug/procwatch-agent"
                    )));
                }
            }
            let live: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let generation_seen = status.observed_generation >= deployment.metadata.generation;
            match live.as_slice() {
                [pod] if generation_seen && is_ready(pod) && pods.len() == 1 => {
                    Ok(Wait::Done((*pod).clone()))
                }
                _ => Ok(Wait::not_yet(format!(
                    "{} pods ({}); deployment ready={} updated={} observedGeneration={:?}",
                    pods.len(),
                    pods.iter().map(describe_pod).collect::<Vec<_>>().join(", "),
                    status.ready_replicas.unwrap_or(0),
                    status.updated_replicas.unwrap_or(0),
                    status.observed_generation,
                ))),
            }
        });
        let pod = pod.await?;
        let ca = self.ca_pem().await?;
        let hooks: Api<MutatingWebhookConfiguration> = Api::all(self.cluster.client());
        wait_for(
            "the webhook configuration's caBundle to be the operator's CA",
            timeout,
            || async {
                let hook = hooks.get(WEBHOOK_CONFIGURATION).await?;
                let bundle = hook
                    .webhooks
                    .iter()
                    .flatten()
                    .next()
                    .and_then(|w| w.client_config.ca_bundle.clone());
                Ok(match bundle {
                    Some(b) if b.0 == ca.as_bytes() => Wait::Done(()),
                    Some(_) => Wait::not_yet("a caBundle, not the Secret's CA"),
                    None => Wait::not_yet("no caBundle"),
                })
            },
        )
        .await?;
        Ok(pod)
    }

    /// The operator's CA certificate (PEM), from its Secret: what agents and the API server
    /// trust for the webhook and the report endpoint.
    pub async fn ca_pem(&self) -> anyhow::Result<String> {
        let secrets: Api<Secret> = Api::namespaced(self.cluster.client(), OPERATOR_NAMESPACE);
        let secret = wait_for(
            &format!("Secret {OPERATOR_NAMESPACE}/{SERVING_SECRET}"),
            Duration::from_secs(60),
            || async {
                Ok(secrets
                    .get_opt(SERVING_SECRET)
                    .await?
                    .map_or(Wait::not_yet("absent"), Wait::Done))
            },
        )
        .await?;
        let ca = secret
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .context("the serving Secret has no ca.crt")?;
        Ok(String::from_utf8(ca.0.clone())?)
    }

    /// Logs of every operator container, current and (when it restarted) previous.
    pub async fn logs(&self) -> String {
        let mut out = String::new();
        let pods_api: Api<Pod> = Api::namespaced(self.cluster.client(), OPERATOR_NAMESPACE);
        let pods = match self.pods().await {
            Ok(p) => p,
            Err(e) => return format!("listing operator pods: {e:#}\n"),
        };
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let restarts: i32 = pod
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(|c| c.restart_count)
                .sum();
            let previous = [true, false];
            for prev in previous {
                if prev && restarts == 0 {
                    continue;
                }
                let params = LogParams {
                    previous: prev,
                    ..Default::default()
                };
                let label = if prev { "previous" } else { "current" };
                match pods_api.logs(&name, &params).await {
                    Ok(text) => {
                        let _ = writeln!(out, "--- operator pod {name} ({label} container) ---");
                        out.push_str(&text);
                        if !text.ends_with('\n') {
                            out.push('\n');
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "--- operator pod {name} ({label}): {e}");
                    }
                }
            }
        }
        out
    }

    /// Lines of the operator's logs that tell of a request the API server refused for lack of
    /// rights (RBAC): must be none.
    pub async fn forbidden_log_lines(&self) -> Vec<String> {
        self.logs()
            .await
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("forbidden") || l.contains("cannot ") && l.contains("in api group")
            })
            .map(str::to_owned)
            .collect()
    }

    /// Scales the operator's Deployment to `replicas` and waits: for 0, until no operator pod
    /// is left; otherwise until [`wait_ready`](Self::wait_ready).
    pub async fn scale(&self, replicas: i32) -> anyhow::Result<()> {
        let deployments: Api<Deployment> =
            Api::namespaced(self.cluster.client(), OPERATOR_NAMESPACE);
        deployments
            .patch(
                OPERATOR_DEPLOYMENT,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
            )
            .await
            .context("scaling the operator")?;
        if replicas == 0 {
            wait_for("no operator pod left", READY_TIMEOUT, || async {
                let pods = self.pods().await?;
                Ok(if pods.is_empty() {
                    Wait::Done(())
                } else {
                    Wait::not_yet(pods.iter().map(describe_pod).collect::<Vec<_>>().join(", "))
                })
            })
            .await
        } else {
            self.wait_ready(READY_TIMEOUT).await.map(|_| ())
        }
    }

    /// The operator's `/metrics` (Prometheus text), from the test process (host network).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        operator_metrics().await
    }

    /// The operator's `/readyz`: its status code and text (`ready (leader)`, `ready
    /// (standby)`, or what is missing).
    pub async fn readyz(&self) -> anyhow::Result<(reqwest::StatusCode, String)> {
        plain_get(READYZ_URL).await
    }

    /// An HTTPS client that trusts the operator's CA (for [`REPORT_URL`]).
    pub async fn https_client(&self) -> anyhow::Result<reqwest::Client> {
        https_client_trusting(&self.ca_pem().await?)
    }

    /// The events of the operator's namespace and the operator's logs.
    pub async fn diagnostics(&self) -> String {
        let mut out = String::new();
        let events: Api<Event> = Api::namespaced(self.cluster.client(), OPERATOR_NAMESPACE);
        match events.list(&ListParams::default()).await {
            Ok(list) => {
                let _ = writeln!(out, "--- events of {OPERATOR_NAMESPACE} ---");
                for e in list.items {
                    let _ = writeln!(out, "{}", crate::diagnostics::event_line(&e));
                }
            }
            Err(e) => {
                let _ = writeln!(out, "events of {OPERATOR_NAMESPACE}: {e}");
            }
        }
        out.push_str(&self.logs().await);
        out
    }

    /// Marks the test as passed: the drop removes the operator without printing its logs.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    /// Which of the operator's namespace, CRD and webhook configuration exist.
    async fn installed(&self) -> anyhow::Result<Vec<&'static str>> {
        let namespaces: Api<Namespace> = Api::all(self.cluster.client());
        let crds: Api<CustomResourceDefinition> = Api::all(self.cluster.client());
        let hooks: Api<MutatingWebhookConfiguration> = Api::all(self.cluster.client());
        let mut present = Vec::new();
        if namespaces.get_opt(OPERATOR_NAMESPACE).await?.is_some() {
            present.push("namespace");
        }
        if crds.get_opt(CRD_NAME).await?.is_some() {
            present.push("CRD");
        }
        if hooks.get_opt(WEBHOOK_CONFIGURATION).await?.is_some() {
            present.push("webhook configuration");
        }
        Ok(present)
    }

    async fn anything_installed(&self) -> anyhow::Result<bool> {
        Ok(!self.installed().await?.is_empty())
    }

    /// `kubectl delete -k` of the overlay, then waits until the namespace, the CRD and the
    /// webhook configuration are gone.
    pub async fn remove(&self) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let overlay_arg = self.overlay.to_string_lossy().into_owned();
        self.cluster
            .kubectl(&[
                "delete",
                "-k",
                &overlay_arg,
                "--ignore-not-found",
                "--wait=false",
            ])
            .await
            .context("removing the operator")?;
        // When each part went, for the log: namespace finalization is the slow one.
        let gone_at = std::sync::Mutex::new(Vec::<(&str, Duration)>::new());
        wait_for(
            "the operator's namespace, CRD and webhook configuration to be gone",
            REMOVE_TIMEOUT,
            || async {
                let present = self.installed().await?;
                let mut gone = gone_at.lock().unwrap_or_else(|e| e.into_inner());
                for part in ["webhook configuration", "CRD", "namespace"] {
                    if !present.contains(&part) && !gone.iter().any(|(p, _)| *p == part) {
                        gone.push((part, t0.elapsed()));
                    }
                }
                Ok(if present.is_empty() {
                    Wait::Done(())
                } else {
                    Wait::not_yet(format!("still there: {}", present.join(", ")))
                })
            },
        )
        .await?;
        let gone = gone_at.into_inner().unwrap_or_else(|e| e.into_inner());
        eprintln!(
            "procwatch-e2e: operator removed in {:.1}s ({})",
            t0.elapsed().as_secs_f64(),
            gone.iter()
                .map(|(part, at)| format!("{part} gone after {:.1}s", at.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.lock.is_none() {
            return;
        }
        let (failed, keep) = failed_and_kept(&self.finished);
        let overlay = self.overlay.clone();
        // The lock stays with `self` until the clean-up has run.
        run_cleanup("remove the operator", move || async move {
            let cluster = match Cluster::connect().await {
                Ok(c) => c,
                Err(e) => {
                    return eprintln!("procwatch-e2e: operator not removed: {e:#}");
                }
            };
            let operator = Operator {
                cluster,
                overlay,
                finished: AtomicBool::new(true),
                lock: None,
            };
            if failed {
                eprintln!(
                    "\n===== procwatch-e2e: test failed; the operator =====\n{}===== end of the operator =====",
                    operator.diagnostics().await
                );
            }
            if keep {
                eprintln!("procwatch-e2e: PROCWATCH_E2E_KEEP=1: operator kept");
            } else if let Err(e) = operator.remove().await {
                eprintln!("procwatch-e2e: removing the operator: {e:#}");
            }
        });
    }
}

/// The `/metrics` (Prometheus text) of the operator the loopback overlay deploys, from the
/// test process (host network).
pub async fn operator_metrics() -> anyhow::Result<String> {
    let (status, text) = plain_get(METRICS_URL).await?;
    if !status.is_success() {
        bail!("GET {METRICS_URL}: {status}: {text}");
    }
    Ok(text)
}

/// An HTTPS client (reqwest over rustls with ring) that trusts only `ca_pem`.
pub fn https_client_trusting(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("parsing the CA PEM")?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()?)
}

/// Takes the cluster-wide operator lock (blocking in a thread of its own).
async fn lock_cluster() -> anyhow::Result<File> {
    let path = std::env::temp_dir().join("procwatch-e2e-operator.lock");
    tokio::task::spawn_blocking(move || -> anyhow::Result<File> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            eprintln!(
                "procwatch-e2e: waiting for another test's operator to go ({})",
                path.display()
            );
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(file)
    })
    .await?
}

/// Says so when the image that `project-image` made for the local cluster is older than the
/// binaries cargo built: the test would deploy yesterday's code.
fn warn_if_image_is_stale() {
    let tar = cluster_dir().join("images/localhost_procwatch_dev.tar");
    let Ok(image_time) = std::fs::metadata(&tar).and_then(|m| m.modified()) else {
        return;
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    for bin in ["procwatch-operator", "procwatch-agent"] {
        let path = target.join("debug").join(bin);
        if let Ok(bin_time) = std::fs::metadata(&path).and_then(|m| m.modified())
            && bin_time > image_time
        {
            eprintln!(
                "procwatch-e2e: WARNING: {} is newer than the image {PROJECT_IMAGE} ({}); \
                 rebuild it: tests/cluster/project-image {PROJECT_IMAGE} \
                 {t}/debug/procwatch-operator {t}/debug/procwatch-agent",
                path.display(),
                tar.display(),
                t = target.display()
            );
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A waiting reason that no waiting will fix.
fn image_problem(pod: &Pod) -> Option<String> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            matches!(
                reason,
                "ErrImageNeverPull" | "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            )
            .then(|| {
                format!(
                    "operator pod {}: {reason}: {}",
                    pod.metadata.name.as_deref().unwrap_or("?"),
                    waiting.message.as_deref().unwrap_or("")
                )
            })
        })
        .next()
}

fn describe_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("?");
    let terminating = if pod.metadata.deletion_timestamp.is_some() {
        " terminating"
    } else {
        ""
    };
    let ready = if is_ready(pod) { " ready" } else { "" };
    format!("{name} {phase}{ready}{terminating}")
}

/// A plain-HTTP GET from the test process (host network): status and body.
async fn plain_get(url: &str) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    Ok((status, response.text().await?))
}

/// Sends the webhook ([`ADMISSION_URL`]) the AdmissionReview the API server would send for
/// creating the pod `name` labelled `app=<app>` in `namespace`; true when the answer allows
/// it with a patch (the agent added).
pub async fn webhook_injects(
    client: &reqwest::Client,
    namespace: &str,
    name: &str,
    app: &str,
) -> anyhow::Result<bool> {
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("review-{namespace}-{name}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "procwatch-e2e"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"containers": [{"name": "app", "image": "localhost/busybox:local"}]}
            }
        }
    });
    let answer: serde_json::Value = client
        .post(ADMISSION_URL)
        .timeout(Duration::from_secs(5))
        .json(&review)
        .send()
        .await
        .with_context(|| format!("POST {ADMISSION_URL}"))?
        .error_for_status()?
        .json()
        .await?;
    let response = &answer["response"];
    Ok(response["allowed"] == true && response["patch"].as_str().is_some_and(|p| !p.is_empty()))
}
