//! `procwatch-agent run` against a real HTTPS endpoint on 127.0.0.1: TLS trusting only the
//! given CA, a bearer token read afresh for every report, backoff, and the operator's answers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::operator::{FakeOperator, Received, Script, TestCa};
use common::{FakeProc, FakeProcess};
use http::StatusCode;
use procwatch_agent::procfs_read::ProcRootError;
use procwatch_agent::reporter::{self, ReportClient, RunConfig, SendError};
use procwatch_crds::EnvironmentPolicy;
use procwatch_crds::report::{
    self, AgentReport, CollectRequest, ContainerIdentity, ReportResponse, UnsupportedVersion,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NGINX_ID: &str = "3f2a9c1b7e0d4c5a8b9e1f2d3c4b5a6978675645342312019f8e7d6c5b4a3921";

/// A pod with one nginx container of two processes, seen by the agent (pid 40).
fn pod() -> FakeProc {
    let proc = FakeProc::new(40);
    for (pid, args) in [
        (7, &b"nginx: master process\0"[..]),
        (8, b"nginx: worker process\0"),
    ] {
        let mut nginx = FakeProcess::new(pid, "nginx", args);
        nginx.cgroup = format!("0::/../cri-containerd-{NGINX_ID}.scope\n");
        nginx.mount_namespace = Some(20);
        nginx.environ = b"PATH=/bin\0SECRET=x\0".to_vec();
        proc.add(&nginx);
    }
    let mut agent = FakeProcess::new(40, "procwatch-agent", b"procwatch-agent\0run\0");
    agent.mount_namespace = Some(40);
    proc.add(&agent);
    proc
}

/// The operator's answer naming the pod's nginx container, with a 1s interval.
fn response(watched: bool, collect: CollectRequest) -> ReportResponse {
    ReportResponse {
        watched,
        interval_seconds: 1,
        collect,
        containers: vec![ContainerIdentity {
            name: "nginx".into(),
            container_id: format!("containerd://{NGINX_ID}"),
        }],
        workload_finished: false,
    }
}

fn accepted(response: ReportResponse) -> (StatusCode, String) {
    (StatusCode::OK, serde_json::to_string(&response).unwrap())
}

fn answer(watched: bool, collect: CollectRequest) -> (StatusCode, String) {
    accepted(response(watched, collect))
}

fn minimal_collect() -> CollectRequest {
    CollectRequest {
        environment: EnvironmentPolicy::None,
        max_processes: 1,
        ..CollectRequest::default()
    }
}

/// What every test here starts from: an operator answering as `script` says, the pod's proc
/// root and a token file holding `token`.
struct Setup {
    ca: TestCa,
    operator: FakeOperator,
    proc: FakeProc,
    token: tempfile::NamedTempFile,
}

impl Setup {
    async fn start(script: Arc<Script>, token: &str) -> Self {
        let ca = TestCa::new();
        let operator = FakeOperator::start(&ca, script).await;
        let token_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token_file.path(), token).unwrap();
        Setup {
            ca,
            operator,
            proc: pod(),
            token: token_file,
        }
    }

    /// `reporter::run` for pod `shop/web-0`, starting with the default collect options, until
    /// the returned sender is used.
    fn spawn_run_loop(
        &self,
        interval: Duration,
    ) -> (oneshot::Sender<()>, JoinHandle<Result<(), ProcRootError>>) {
        let client =
            ReportClient::new(&self.operator.url, &self.ca.pem, self.token.path()).unwrap();
        let config = RunConfig {
            proc_root: self.proc.path().to_path_buf(),
            pod_name: "web-0".into(),
            pod_namespace: "shop".into(),
            pod_uid: "uid-1".into(),
            interval,
            collect: CollectRequest::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let agent = tokio::spawn(reporter::run(config, client, async {
            let _ = stopped.await;
        }));
        (stop, agent)
    }

    /// `procwatch-agent run` as the webhook configures it (environment only), pod `shop/web-0`,
    /// reporting every second, with `extra` variables; its stderr is piped.
    fn spawn_agent_binary(&self, extra: &[(&str, String)]) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_procwatch-agent"))
            .args(["run", "--proc-root"])
            .arg(self.proc.path())
            .env_clear()
            .env("POD_NAME", "web-0")
            .env("POD_NAMESPACE", "shop")
            .env("POD_UID", "uid-1")
            .env("PROCWATCH_REPORT_URL", &self.operator.url)
            .env("PROCWATCH_CA_PEM", &self.ca.pem)
            .env("PROCWATCH_TOKEN_FILE", self.token.path())
            .env("PROCWATCH_INTERVAL", "1s")
            .envs(extra.iter().map(|(name, value)| (name, value)))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

async fn next(operator: &mut FakeOperator) -> (Instant, Received) {
    let received = tokio::time::timeout(Duration::from_secs(10), operator.received.recv())
        .await
        .expect("a report within 10s")
        .expect("the operator runs");
    (Instant::now(), received)
}

#[tokio::test]
async fn reports_with_a_fresh_token_backs_off_and_follows_the_operator() {
    let script = Arc::new(|n: usize| match n {
        0 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "operator starting".to_string(),
        ),
        1 => (StatusCode::UNAUTHORIZED, "token expired".to_string()),
        2 | 3 => answer(true, minimal_collect()),
        _ => answer(false, minimal_collect()),
    });
    let mut setup = Setup::start(script, "token-1\n").await;
    let (stop, agent) = setup.spawn_run_loop(Duration::from_secs(1));
    let operator = &mut setup.operator;

    // Before the first answer: default collection, groups named by runtime and short ID.
    let (first_at, first) = next(operator).await;
    assert_eq!(first.path, "/report/v1");
    assert_eq!(first.authorization.as_deref(), Some("Bearer token-1"));
    let report: &AgentReport = &first.report;
    assert_eq!(
        (
            report.pod_name.as_str(),
            report.pod_namespace.as_str(),
            report.pod_uid.as_str()
        ),
        ("web-0", "shop", "uid-1")
    );
    assert_eq!(
        report.containers.len(),
        1,
        "the agent's own container is left out"
    );
    assert_eq!(report.containers[0].name, "containerd-3f2a9c1b7e0d");
    assert_eq!(report.containers[0].processes.len(), 2);
    assert_eq!(
        report.containers[0].processes[0].environment,
        ["PATH", "SECRET"]
    );

    // 503: retried after a jittered 0.5..1s.
    let (second_at, second) = next(operator).await;
    let waited = second_at - first_at;
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(second.authorization.as_deref(), Some("Bearer token-1"));

    // 401: the kubelet rotates the token; the next report carries the new one.
    std::fs::write(setup.token.path(), "token-2\n").unwrap();
    let (_, third) = next(operator).await;
    assert_eq!(third.authorization.as_deref(), Some("Bearer token-2"));

    // Accepted: the next scan follows the answer (names, one process, no environment).
    let (_, fourth) = next(operator).await;
    let nginx = &fourth.report.containers[0];
    assert_eq!(nginx.name, "nginx");
    assert_eq!(
        nginx.container_id.as_deref(),
        Some(format!("containerd://{NGINX_ID}").as_str())
    );
    assert_eq!(
        (nginx.process_count, nginx.processes.len(), nginx.truncated),
        (2, 1, true)
    );
    assert!(nginx.processes[0].environment.is_empty());

    // Unwatched: the agent goes quiet (it asks again only after minutes) but keeps running.
    let _ = next(operator).await;
    let quiet = tokio::time::timeout(Duration::from_secs(3), operator.received.recv()).await;
    assert!(quiet.is_err(), "no report while unwatched");
    assert!(!agent.is_finished());

    let stop_at = Instant::now();
    stop.send(()).unwrap();
    agent.await.unwrap().unwrap();
    assert!(stop_at.elapsed() < Duration::from_secs(1));
}

/// The first answer names the containers and says what to collect: the agent scans again a
/// second later instead of an interval later, then keeps the interval.
#[tokio::test]
async fn new_instructions_are_followed_up_at_once_then_the_interval_holds() {
    let script = Arc::new(|_: usize| {
        accepted(ReportResponse {
            interval_seconds: 30,
            ..response(true, minimal_collect())
        })
    });
    let mut setup = Setup::start(script, "token\n").await;
    let (stop, agent) = setup.spawn_run_loop(Duration::from_secs(30));
    let operator = &mut setup.operator;

    let (first_at, first) = next(operator).await;
    assert_eq!(first.report.containers[0].name, "containerd-3f2a9c1b7e0d");
    let (second_at, second) = next(operator).await;
    assert!(
        second_at - first_at < Duration::from_secs(3),
        "{:?}",
        second_at - first_at
    );
    assert_eq!(second.report.containers[0].name, "nginx");
    assert_eq!(second.report.containers[0].processes.len(), 1);
    // Nothing changed since: the 30s interval.
    let quiet = tokio::time::timeout(Duration::from_secs(3), operator.received.recv()).await;
    assert!(quiet.is_err(), "a third report within 3s");

    stop.send(()).unwrap();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn trusts_only_the_given_ca() {
    let (trusted, other) = (TestCa::new(), TestCa::new());
    let operator = FakeOperator::start(
        &other,
        Arc::new(|_| answer(true, CollectRequest::default())),
    )
    .await;
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "t").unwrap();
    let client = ReportClient::new(&operator.url, &trusted.pem, token.path()).unwrap();
    let error = client.send(&AgentReport::default()).await.unwrap_err();
    assert!(matches!(error, SendError::Connect { .. }), "{error}");
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(cause.contains("certificate"), "{error}: {cause}");

    // The same server is fine for a client that trusts its CA; the answer is parsed.
    let client = ReportClient::new(&operator.url, &other.pem, token.path()).unwrap();
    let response = client.send(&AgentReport::default()).await.unwrap();
    assert!(response.watched);

    // No token file: a clear error, not a request without credentials.
    let client = ReportClient::new(&operator.url, &other.pem, "/nonexistent/token").unwrap();
    let error = client.send(&AgentReport::default()).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot read the token file /nonexistent/token"),
        "{error}"
    );

    // A token that cannot be a header value: said so, not blamed on the operator's answer.
    let broken = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(broken.path(), "part\nother part").unwrap();
    let client = ReportClient::new(&operator.url, &other.pem, broken.path()).unwrap();
    let error = client.send(&AgentReport::default()).await.unwrap_err();
    assert!(matches!(error, SendError::Request(_)), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("cannot build the report request"),
        "{error}"
    );
}

#[tokio::test]
async fn the_binary_reports_and_stops_promptly_on_sigterm() {
    let script = Arc::new(|_| answer(true, CollectRequest::default()));
    let mut setup = Setup::start(script, "token-1").await;
    let mut child = setup.spawn_agent_binary(&[]);
    let operator = &mut setup.operator;
    let (_, first) = next(operator).await;
    assert_eq!(first.report.pod_name, "web-0");
    assert_eq!(first.authorization.as_deref(), Some("Bearer token-1"));
    let (_, second) = next(operator).await;
    assert_eq!(second.report.containers[0].name, "nginx");

    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .expect("stops within 2s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// A Job's pod on a server without native sidecars: once the operator says the other containers
/// have finished, the agent process exits 0 (so the pod can complete) and reports no more.
#[tokio::test]
async fn the_binary_exits_successfully_once_the_workload_has_finished() {
    let script = Arc::new(|n: usize| {
        accepted(ReportResponse {
            workload_finished: n >= 1,
            ..response(true, minimal_collect())
        })
    });
    let mut setup = Setup::start(script, "token").await;
    let mut child = setup.spawn_agent_binary(&[]);
    let operator = &mut setup.operator;
    let _ = next(operator).await;
    let _ = next(operator).await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the agent exits after the answer that the workload finished")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        operator.received.try_recv().is_err(),
        "no report after the workload finished"
    );
}

/// The webhook gives the agent what the watches collect: the very first report, before any
/// answer, already has it (here: values with secrets masked, one process per container).
#[tokio::test]
async fn the_first_report_collects_what_the_webhook_said() {
    let script = Arc::new(|_| answer(true, CollectRequest::default()));
    let mut setup = Setup::start(script, "token").await;
    let collect = CollectRequest {
        environment: EnvironmentPolicy::Redacted,
        max_processes: 1,
        ..CollectRequest::default()
    };
    let mut child = setup.spawn_agent_binary(&[(
        "PROCWATCH_COLLECT",
        serde_json::to_string(&collect).unwrap(),
    )]);
    let (_, first) = next(&mut setup.operator).await;
    child.kill().await.unwrap();
    assert_eq!(first.report.version, report::VERSION);
    let nginx = &first.report.containers[0];
    assert_eq!((nginx.processes.len(), nginx.truncated), (1, true));
    assert_eq!(
        nginx.processes[0].environment,
        ["PATH=/bin", "SECRET=<redacted>"]
    );
}

/// An operator that does not accept this agent's report version: the agent says so once, not
/// at every retry, and keeps trying every interval.
#[tokio::test]
async fn a_refused_version_is_logged_once_and_retried_every_interval() {
    // An operator two versions ahead.
    let refusal = UnsupportedVersion {
        message: format!(
            "report version {} is not supported; this operator accepts versions {} to {}",
            report::VERSION,
            report::VERSION + 1,
            report::VERSION + 2
        ),
        version: report::VERSION,
        accepted: vec![report::VERSION + 1, report::VERSION + 2],
    };
    let body = serde_json::to_string(&refusal).unwrap();
    let script = Arc::new(move |_| (StatusCode::BAD_REQUEST, body.clone()));
    let mut setup = Setup::start(script, "token").await;
    let mut child = setup.spawn_agent_binary(&[]);
    let operator = &mut setup.operator;
    let (first_at, _) = next(operator).await;
    let _ = next(operator).await;
    let (third_at, _) = next(operator).await;
    // Every interval (1s), not the backoff's growing delays, nor faster.
    let waited = third_at - first_at;
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let stderr_pipe = child.stderr.take().unwrap().into_owned_fd().unwrap();
    child.wait().await.unwrap();
    // The agent has exited: the pipe reads to its end at once.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(stderr_pipe), &mut stderr).unwrap();
    let said = stderr.matches("refuses this agent's reports").count();
    assert_eq!(said, 1, "{stderr}");
    assert!(stderr.contains(&refusal.message), "{stderr}");
}

/// An operator configured below the agent's default body limit answers 413: the agent's next
/// report is shrunk to half the refused size (the least busy process left out, and said so),
/// never the same body.
#[tokio::test]
async fn a_report_refused_as_too_large_is_sent_again_shrunk() {
    let script = Arc::new(|n| match n {
        0 => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "report too large".to_string(),
        ),
        _ => answer(true, CollectRequest::default()),
    });
    let mut setup = Setup::start(script, "token").await;
    let mut child = setup.spawn_agent_binary(&[]);
    let (refused_at, refused) = next(&mut setup.operator).await;
    let (shrunk_at, shrunk) = next(&mut setup.operator).await;
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    child.wait().await.unwrap();
    let size = |report: &report::AgentReport| serde_json::to_vec(report).unwrap().len();
    assert!(size(&shrunk.report) <= size(&refused.report) / 2);
    let nginx = |report: &report::AgentReport| report.containers[0].clone();
    assert!(nginx(&shrunk.report).processes.len() < nginx(&refused.report).processes.len());
    assert!(nginx(&shrunk.report).truncated);
    // Soon, not after a backoff.
    assert!(shrunk_at - refused_at < Duration::from_secs(3));
}
