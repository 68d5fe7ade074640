//! End to end on a real cluster: no value an agent reports can make the API server refuse a
//! watch's status, and when something else refuses it anyway (here a validating webhook of the
//! test's own), the operator writes a reduced status, says why, and does not loop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use procwatch_crds::{
    ContainerReport, ContainerSummary, FileFingerprint, FileVariant, FileVariants, ListeningSocket,
    PodReport, ProcessInfo, ProcessState, ProcessWatch, ProcessWatchStatus, SocketProtocol,
    Violation,
};
use procwatch_e2e::processwatch::{
    apply_watch, busybox_pod, describe_status, metric_value, wait_for_watch,
};
use procwatch_e2e::{Cluster, Operator, apply_yaml};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A watch named `name` selecting `app=<app>`, every 2 s.
fn watch_yaml(name: &str, app: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: procwatch.dev/v1alpha1
kind: ProcessWatch
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  interval: 2s
"#
    )
}

/// A pod whose shell leaves a zombie: `sleep 0` exits at once, and its parent, the shell become
/// `sleep 3600` by `exec`, never reaps it.
fn zombie_pod(name: &str, app: &str) -> String {
    busybox_pod(name, app, "sleep 0 & exec sleep 3600")
}

fn ready_condition(pw: &ProcessWatch) -> Option<(String, String, String)> {
    let ready = pw
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        ready.status.clone(),
        ready.reason.clone(),
        ready.message.clone(),
    ))
}

#[tokio::test]
async fn zombie_in_a_watched_pod() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let _operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("zombie").await?;
    apply_watch(&ns, &watch_yaml("zombies", "zombie", ""), "zombies").await?;
    ns.apply_yaml(&zombie_pod("undead", "zombie")).await?;

    let t0 = Instant::now();
    let pw = wait_for_watch(
        &ns,
        "zombies",
        "the watch Ready with the zombie listed",
        Duration::from_secs(90),
        |pw| {
            let ready = ready_condition(pw)?.0 == "True";
            let zombie_listed = pw.status.as_ref()?.pods.iter().any(|p| {
                p.containers
                    .iter()
                    .flat_map(|c| &c.processes)
                    .any(|p| p.state == ProcessState::Zombie)
            });
            (ready && zombie_listed).then(|| pw.clone())
        },
    )
    .await?;
    println!(
        "Ready with the zombie listed after {:.1}s: {}",
        t0.elapsed().as_secs_f64(),
        describe_status(&pw)
    );
    let status = pw.status.context("status")?;
    let app = status.pods[0]
        .containers
        .iter()
        .find(|c| c.name == "app")
        .context("container app")?;
    let zombie = app
        .processes
        .iter()
        .find(|p| p.state == ProcessState::Zombie)
        .context("zombie")?;
    let parent = app
        .processes
        .iter()
        .find(|p| p.pid == zombie.ppid)
        .context("the zombie's parent is listed")?;
    ensure!(zombie.command == "sleep", "{zombie:?}");
    ensure!(zombie.args.is_empty(), "a zombie has no args: {zombie:?}");
    ensure!(zombie.pid > 1 && zombie.uid == 0, "{zombie:?}");
    ensure!(parent.args == "sleep 3600", "{parent:?}");
    ensure!(status.reporting_pods == 1, "{status:?}");
    ns.finish();
    Ok(())
}

/// Statuses with every kind of edge value: empty strings, zero and maximum numbers, missing
/// optional facts, every process state, long and odd text.
fn edge_statuses() -> Vec<(&'static str, ProcessWatchStatus)> {
    let zombie = ProcessInfo {
        pid: 42,
        ppid: 7,
        uid: 1000,
        command: "nc".into(),
        state: ProcessState::Zombie,
        ..ProcessInfo::default()
    };
    let states = [
        ProcessState::Running,
        ProcessState::Sleeping,
        ProcessState::DiskSleep,
        ProcessState::Stopped,
        ProcessState::Tracing,
        ProcessState::Zombie,
        ProcessState::Dead,
        ProcessState::Idle,
        ProcessState::Other,
    ];
    let every_state = states
        .iter()
        .zip(1..)
        .map(|(state, pid)| ProcessInfo {
            pid,
            state: *state,
            command: format!("{state:?}"),
            ..ProcessInfo::default()
        })
        .collect();
    let empty_everything = ProcessInfo {
        pid: 9,
        user: Some(String::new()),
        command: String::new(),
        args: String::new(),
        capabilities: vec![String::new()],
        environment: vec![String::new(), "=x".into()],
        exe: Some(String::new()),
        cwd: Some(String::new()),
        ..ProcessInfo::default()
    };
    let maxima = ProcessInfo {
        pid: i32::MAX,
        ppid: i32::MAX,
        uid: u32::MAX,
        threads: u32::MAX,
        cpu_millicores: u64::MAX,
        cpu_time_millis: u64::MAX,
        memory_bytes: u64::MAX,
        open_files: Some(u32::MAX),
        started_at: Some(Time(Timestamp::UNIX_EPOCH)),
        args: "ü\u{1F600}\t\"'\\ ".repeat(1000),
        command: "x".repeat(64),
        state: ProcessState::Running,
        ..ProcessInfo::default()
    };
    let container = |processes: Vec<ProcessInfo>| ContainerReport {
        name: "app".into(),
        container_id: Some(String::new()),
        process_count: u32::MAX,
        cpu_millicores: u64::MAX,
        memory_bytes: 0,
        processes,
        listening: vec![ListeningSocket {
            protocol: SocketProtocol::Unix,
            address: Some(String::new()),
            path: Some(String::new()),
            reachable_at: None,
            pid: None,
        }],
        files: vec![FileFingerprint {
            path: "/etc/x".into(),
            size: u64::MAX,
            mode: String::new(),
            sha256: String::new(),
        }],
        libraries: vec![String::new()],
        truncated: true,
        unreadable: vec![String::new()],
    };
    let status = |processes: Vec<ProcessInfo>| ProcessWatchStatus {
        processes: u64::MAX,
        needs_restart: vec![String::new()],
        opted_out: vec![String::new()],
        summary: vec![ContainerSummary {
            container: "app".into(),
            commands: vec![String::new(), "sh".into()],
            file_variants: vec![FileVariants {
                path: "/etc/x".into(),
                variants: 0,
                fingerprints: vec![FileVariant {
                    sha256: String::new(),
                    pods: u32::MAX,
                    pod_names: vec![String::new()],
                    expected: false,
                }],
            }],
            ..ContainerSummary::default()
        }],
        pods: vec![PodReport {
            name: "edge-1".into(),
            uid: Some(String::new()),
            node_name: Some(String::new()),
            reported_at: None,
            containers: vec![container(processes)],
            skipped: Default::default(),
            pids_allocated: Some(u64::MAX),
            pids_per_minute: Some(0),
        }],
        violations: vec![Violation {
            pod: "edge-1".into(),
            container: "app".into(),
            pid: Some(i32::MIN),
            command: Some(String::new()),
            rule: "commands".into(),
            message: "pid 1 is not one of the expected commands []".into(),
            since: None,
        }],
        ..ProcessWatchStatus::default()
    };
    vec![
        ("a zombie", status(vec![zombie])),
        ("every process state", status(every_state)),
        ("empty strings everywhere", status(vec![empty_everything])),
        ("maximum numbers and odd text", status(vec![maxima])),
        ("no processes at all", status(Vec::new())),
    ]
}

#[tokio::test]
async fn edge_case_statuses_are_accepted_by_the_api_server() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    // Installs the CRD under the tests' cluster lock: applying it alone would race another
    // test's operator deployment creating it.
    let _operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("edge-status").await?;
    ns.apply_yaml(&watch_yaml("edges", "nothing-at-all", ""))
        .await?;
    let api: Api<ProcessWatch> = ns.api();
    let params = PatchParams::apply("procwatch-e2e-edges").force();
    for (what, status) in edge_statuses() {
        let patch = Patch::Apply(json!({
            "apiVersion": "procwatch.dev/v1alpha1",
            "kind": "ProcessWatch",
            "status": status,
        }));
        // The object the server returns is what it stored: an operator of another test may
        // write this watch's status afterwards.
        let stored = api
            .patch_status("edges", &params, &patch)
            .await
            .with_context(|| format!("the API server refused {what}"))?;
        let stored = stored.status.context("no status stored")?;
        let sent = serde_json::to_value(&status)?;
        let back = serde_json::to_value(&stored)?;
        ensure!(
            sent["pods"] == back["pods"]
                && sent["summary"] == back["summary"]
                && sent["violations"] == back["violations"],
            "{what}: stored differently:\nsent {sent}\nback {back}"
        );
        println!("accepted and stored as sent: {what}");
    }
    ns.finish();
    Ok(())
}

/// A validating admission webhook of the test's own on 127.0.0.1: it refuses every status of
/// a watch that carries pod detail, with `message`.
struct RefusingWebhook {
    url: String,
    ca_bundle: String,
    requests: Arc<std::sync::atomic::AtomicUsize>,
}

const POLICY_MESSAGE: &str = "status.pods is not allowed here by the test's policy";

impl RefusingWebhook {
    async fn start() -> anyhow::Result<RefusingWebhook> {
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?;
        let cert = params.self_signed(&key)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
                .map_err(anyhow::Error::msg)?,
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}/validate", listener.local_addr()?);
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        review(request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(RefusingWebhook {
            url,
            ca_bundle: base64::engine::general_purpose::STANDARD.encode(cert.pem()),
            requests,
        })
    }

    /// Applies to the status of watches labelled `refuse-status: "yes"` only.
    fn configuration(&self, name: &str) -> String {
        format!(
            r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
- name: refuse-status.e2e.procwatch.dev
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
  clientConfig: {{url: "{url}", caBundle: "{ca}"}}
  objectSelector: {{matchLabels: {{refuse-status: "yes"}}}}
  rules:
  - apiGroups: [procwatch.dev]
    apiVersions: [v1alpha1]
    operations: [CREATE, UPDATE]
    resources: [processwatches/status]
"#,
            url = self.url,
            ca = self.ca_bundle,
        )
    }
}

async fn review(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let with_pods = review["request"]["object"]["status"]["pods"]
        .as_array()
        .is_some_and(|pods| !pods.is_empty());
    let mut response = json!({"uid": review["request"]["uid"], "allowed": !with_pods});
    if with_pods {
        response["status"] = json!({"code": 422, "reason": "Invalid", "message": POLICY_MESSAGE});
    }
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok(Response::new(Full::new(Bytes::from(answer.to_string()))))
}

#[tokio::test]
async fn a_refused_status_is_reduced_and_announced() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace("refused").await?;
    let webhook = RefusingWebhook::start().await?;
    let configuration = format!("procwatch-e2e-{}", ns.name());
    apply_yaml(
        &cluster.client(),
        ns.name(),
        &webhook.configuration(&configuration),
    )
    .await?;
    let outcome = async {
        apply_watch(
            &ns,
            &watch_yaml("refused", "refused", "refuse-status: \"yes\""),
            "refused",
        )
        .await?;
        ns.apply_yaml(&zombie_pod("refused-1", "refused")).await?;

        let pw = wait_for_watch(
            &ns,
            "refused",
            "Ready=False StatusRejected, with counts and summary but no pod detail",
            Duration::from_secs(90),
            |pw| {
                let (ready, reason, _) = ready_condition(pw)?;
                let status = pw.status.as_ref()?;
                (ready == "False"
                    && reason == "StatusRejected"
                    && status.reporting_pods == 1
                    && status.pods.is_empty()
                    && !status.summary.is_empty())
                .then(|| pw.clone())
            },
        )
        .await?;
        let (_, _, message) = ready_condition(&pw).context("Ready")?;
        ensure!(message.contains(POLICY_MESSAGE), "{message}");

        let events = ns
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=ProcessWatch,reason=StatusRejected",
                "-o",
                "custom-columns=TYPE:.type,COUNT:.count,SERIES:.series.count,MESSAGE:.message",
            ])
            .await?;
        println!("StatusRejected events:\n{events}");
        let rows: Vec<&str> = events.lines().skip(1).collect();
        ensure!(
            rows.len() == 1 && rows[0].starts_with("Warning") && rows[0].contains(POLICY_MESSAGE),
            "one Warning event naming the message: {events}"
        );
        let metrics = operator.metrics().await?;
        let rejected = metric_value(
            &metrics,
            "procwatch_status_writes_total",
            &[("result", "rejected")],
        )
        .unwrap_or(0.0);
        ensure!(
            rejected >= 1.0,
            "procwatch_status_writes_total{{rejected}} = {rejected}"
        );

        // No loop: over a few intervals the full status is not offered again (it is held back
        // for 30 s), so the webhook sees at most the reduced writes.
        let before = webhook.requests.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(8)).await;
        let during = webhook.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
        println!("webhook calls in 8 s while refused: {during}");
        ensure!(
            during <= 8,
            "{during} status writes in 8 s: the operator loops"
        );

        // The policy goes away: the full status comes back, Ready again.
        cluster
            .kubectl(&["delete", "validatingwebhookconfiguration", &configuration])
            .await?;
        let t0 = Instant::now();
        wait_for_watch(
            &ns,
            "refused",
            "Ready again with the pod detail",
            Duration::from_secs(120),
            |pw| {
                let ready = ready_condition(pw)?.0 == "True";
                (ready && !pw.status.as_ref()?.pods.is_empty()).then_some(())
            },
        )
        .await?;
        println!(
            "full status back {:.1}s after the policy was removed",
            t0.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    }
    .await;
    let _ = cluster
        .kubectl(&[
            "delete",
            "validatingwebhookconfiguration",
            &configuration,
            "--ignore-not-found",
        ])
        .await;
    outcome?;
    ns.finish();
    Ok(())
}
