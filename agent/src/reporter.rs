//! `procwatch-agent run`: scan every interval and POST the findings to the operator.
//!
//! The agent holds no Kubernetes rights: it authenticates with its projected token (read afresh for
//! every report, so rotation just works), trusts only the operator's CA, starts with what the
//! webhook said to collect, and learns everything else (interval, what to collect now, the pod's
//! container names) from the operator's answer. When the operator is away it retries with jittered
//! exponential backoff, holding only the latest findings. When no watch selects the pod any more it
//! goes quiet and checks back rarely; it never exits, because the kubelet would restart an exited
//! container forever. When the operator does not accept the agent's report version, the agent says
//! so once and tries again every interval (the operator may be rolled forward).

mod findings;
pub mod fit;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use procwatch_crds::duration::{MAX_INTERVAL, MIN_INTERVAL};
use procwatch_crds::report::{
    self, AgentReport, CollectRequest, ContainerIdentity, ReportResponse, UnsupportedVersion,
};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::procfs_read::ProcRootError;
use crate::scan::{Scan, ScanOptions, Scanner};

/// No report exchange may take longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry delays grow from the first to the last, jittered, and never beyond the interval (see
/// [`Backoff::cap`]).
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often an agent whose pod no watch selects asks again.
pub const UNWATCHED_RECHECK: Duration = Duration::from_secs(300);
/// When the operator's answer asks for something other than the last scan collected (the first
/// answer usually does: names of the containers), the next scan comes this soon instead
/// of an interval later, so the status is complete within seconds of the pod's start.
pub const FOLLOW_UP: Duration = Duration::from_secs(1);
/// A scan reads for at most half the interval, and never longer than this.
pub const MAX_SCAN_BUDGET: Duration = Duration::from_secs(10);
/// A scan still running this long after its budget is stuck in a read that does not return
/// (a hung filesystem): its thread is abandoned and the report goes out without it.
const STUCK_SCAN_GRACE: Duration = Duration::from_secs(5);
/// Abandoned scan threads beyond which no new scan starts (each may hold its thread forever);
/// reports then carry the last findings, marked as such.
const MAX_STUCK_SCANS: usize = 2;
/// The operator's answer is small; anything bigger is refused.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How much of an error response is logged.
const MAX_MESSAGE_CHARS: usize = 512;

/// Why the reporting client cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("report URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("CA certificate: not PEM")]
    CaNotPem(#[source] rustls_pki_types::pem::Error),
    #[error("CA certificate: no certificate in the PEM")]
    NoCa,
    #[error("CA certificate: not usable for TLS")]
    Tls(#[source] rustls::Error),
}

/// Why one report was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot read the token file {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the report")]
    Encode(#[source] serde_json::Error),
    /// The token cannot go into a request (a token with a line break, say).
    #[error("cannot build the report request")]
    Request(#[source] http::Error),
    #[error("cannot reach the operator at {address}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("HTTP exchange failed")]
    Http(#[from] hyper::Error),
    #[error("the operator answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    /// The operator does not accept this agent's [`report::VERSION`].
    #[error("{}", .0.message)]
    UnsupportedVersion(UnsupportedVersion),
    #[error("cannot read the operator's answer")]
    ResponseBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the operator's answer is not a report response")]
    Response(#[source] serde_json::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl SendError {
    /// 401 or 403: the token was refused (expired, wrong audience, another pod's).
    pub fn is_auth(&self) -> bool {
        matches!(self, SendError::Refused { status, .. }
            if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN)
    }
}

/// POSTs reports over HTTPS to one URL, trusting only one CA.
#[derive(Clone)]
pub struct ReportClient {
    uri: Uri,
    address: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    token_file: PathBuf,
}

impl ReportClient {
    /// `url` is `https://host:port/report/v1`; `ca_pem` the PEM of the CA that signed the
    /// operator's certificate.
    pub fn new(
        url: &str,
        ca_pem: &str,
        token_file: impl Into<PathBuf>,
    ) -> Result<Self, ClientSetupError> {
        let bad_url = |reason| ClientSetupError::Url {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad_url("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad_url("must be https://"));
        }
        let host = uri.host().ok_or_else(|| bad_url("no host"))?;
        // IPv6 literals come bracketed in URLs but not in certificates.
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(bare_host.clone())
            .map_err(|_| bad_url("host is not a valid server name"))?;

        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(certificate.map_err(ClientSetupError::CaNotPem)?)
                .map_err(ClientSetupError::Tls)?;
        }
        if roots.is_empty() {
            return Err(ClientSetupError::NoCa);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ClientSetupError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ReportClient {
            address: format!("{bare_host}:{port}"),
            uri,
            server_name,
            tls: TlsConnector::from(Arc::new(config)),
            token_file: token_file.into(),
        })
    }

    /// Sends one report and returns the operator's answer.
    pub async fn send(&self, report: &AgentReport) -> Result<ReportResponse, SendError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(report))
            .await
            .map_err(|_| SendError::Timeout(REQUEST_TIMEOUT))?
    }

    async fn exchange(&self, report: &AgentReport) -> Result<ReportResponse, SendError> {
        // Read for every report: the kubelet rotates the projected token in place.
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| SendError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let body = serde_json::to_vec(report).map_err(SendError::Encode)?;
        let connect_error = |source| SendError::Connect {
            address: self.address.clone(),
            source,
        };
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(connect_error)?;
        // The request goes out as written: with Nagle's algorithm its body's last TLS record
        // waits for the operator's delayed ACK (40 ms on Linux) behind the headers.
        tcp.set_nodelay(true).map_err(connect_error)?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(connect_error)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let connection = tokio::spawn(connection);

        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let request = Request::post(path)
            .header(
                header::HOST,
                self.uri.authority().map_or("", |a| a.as_str()),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .body(Full::new(Bytes::from(body)))
            .map_err(SendError::Request)?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(SendError::ResponseBody)?
            .to_bytes();
        drop(sender);
        connection.abort();

        if status == StatusCode::BAD_REQUEST
            && let Ok(refusal) = serde_json::from_slice::<UnsupportedVersion>(&body)
        {
            return Err(SendError::UnsupportedVersion(refusal));
        }
        if !status.is_success() {
            let message: String = String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect();
            return Err(SendError::Refused { status, message });
        }
        serde_json::from_slice(&body).map_err(SendError::Response)
    }
}

/// Jittered exponential backoff: each delay is drawn from the upper half of a base that
/// doubles from `min` up to `max`, so many agents do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            base: min,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = (base * 2).min(self.max);
        let half = base / 2;
        half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
    }

    pub fn reset(&mut self) {
        self.base = self.min;
    }

    /// Lowers the largest delay to `max` (never below the smallest): an agent retries at least
    /// once per interval, so the status catches up within two intervals of the operator's
    /// return, and no agent asks more often than it reports anyway.
    pub fn cap(&mut self, max: Duration) {
        self.max = max.clamp(self.min, BACKOFF_MAX);
        self.base = self.base.min(self.max);
    }
}

/// Who the agent is and where it reports.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub proc_root: PathBuf,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// Until the operator says otherwise.
    pub interval: Duration,
    /// What to collect until the operator says otherwise: what the webhook gave the agent.
    pub collect: CollectRequest,
}

/// What the operator's last answer asked for.
#[derive(Debug, Clone)]
struct Instructions {
    interval: Duration,
    collect: CollectRequest,
    containers: Vec<ContainerIdentity>,
    watched: bool,
}

/// Scans and reports until `shutdown` completes or the operator answers that the pod's other
/// containers have finished for good (the agent must exit for the pod to complete). Fails only
/// when the proc root cannot be scanned at all.
pub async fn run(
    config: RunConfig,
    client: ReportClient,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProcRootError> {
    tokio::pin!(shutdown);
    let mut scanner = Scanner::new(&config.proc_root)?;
    scanner.sample_cpu()?;
    let mut scans = ScanThread::new(scanner);
    // What the last scan found, reported again (marked) while scans are stuck.
    let mut last_report: Option<AgentReport> = None;
    // Lowered when the operator answers 413 (it may be configured below the default).
    let mut body_limit = report::DEFAULT_MAX_REPORT_BYTES;
    let mut instructions = Instructions {
        interval: config.interval,
        collect: config.collect.clone(),
        containers: Vec::new(),
        watched: true,
    };
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    backoff.cap(config.interval);
    // Only the latest findings are kept while the operator is away.
    let mut pending: Option<(Instant, AgentReport)> = None;
    // Said once until a report is accepted again, not every interval.
    let mut version_refused = false;
    // A short first wait so the first report already has CPU figures.
    let mut delay = Duration::from_secs(1).min(config.interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => return Ok(()),
        }
        let stale = pending
            .as_ref()
            .is_none_or(|(scanned, _)| scanned.elapsed() >= instructions.interval);
        if stale {
            let options = ScanOptions::from(&instructions.collect);
            let budget = scan_budget(instructions.interval);
            let outcome = tokio::select! {
                outcome = scans.scan(&config.proc_root, options, instructions.containers.clone(), budget) => outcome,
                _ = &mut shutdown => return Ok(()),
            };
            let report = match outcome {
                ScanOutcome::Done(scan) => {
                    let scan = scan?;
                    if let Some(reason) = &scan.cut_short {
                        tracing::warn!("scan cut short: {reason}; reporting what it read");
                    }
                    let report = agent_report(&config, scan);
                    last_report = Some(report.clone());
                    report
                }
                ScanOutcome::Stuck(reason) => {
                    tracing::warn!("{reason}");
                    stale_report(&config, last_report.as_ref(), &reason)
                }
            };
            let mut report = report;
            fit::fit(&mut report, body_limit);
            pending = Some((Instant::now(), report));
        }
        let (_, report) = pending.as_ref().expect("a report was just made");
        let outcome = tokio::select! {
            outcome = client.send(report) => outcome,
            _ = &mut shutdown => return Ok(()),
        };
        delay = match outcome {
            Ok(response) => {
                if response.workload_finished {
                    tracing::info!(
                        "the pod's other containers have finished: the agent exits so that the pod can complete"
                    );
                    return Ok(());
                }
                pending = None;
                backoff.reset();
                version_refused = false;
                if instructions.watched && !response.watched {
                    tracing::info!(
                        "no ProcessWatch selects this pod any more: reporting paused, asking again every {}s",
                        UNWATCHED_RECHECK.as_secs()
                    );
                } else if !instructions.watched && response.watched {
                    tracing::info!("this pod is watched again: reporting resumed");
                }
                // `instructions` are what the reported scan used.
                let changed = response.collect != instructions.collect
                    || response.containers != instructions.containers;
                instructions = Instructions {
                    interval: Duration::from_secs(response.interval_seconds)
                        .clamp(MIN_INTERVAL, MAX_INTERVAL),
                    collect: response.collect,
                    containers: response.containers,
                    watched: response.watched,
                };
                backoff.cap(instructions.interval);
                if instructions.watched {
                    tracing::debug!(interval = ?instructions.interval, changed, "report accepted");
                    if changed {
                        FOLLOW_UP.min(instructions.interval)
                    } else {
                        instructions.interval
                    }
                } else {
                    UNWATCHED_RECHECK
                }
            }
            Err(SendError::UnsupportedVersion(refusal)) => {
                if !version_refused {
                    tracing::error!(
                        version = report::VERSION,
                        accepted = ?refusal.accepted,
                        "the operator refuses this agent's reports: {}; trying again every interval",
                        refusal.message
                    );
                    version_refused = true;
                }
                instructions.interval
            }
            Err(SendError::Refused { status, .. }) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                // Never the same body again: the limit halves below what was refused.
                let (_, report) = pending.as_mut().expect("a report was just sent");
                let refused = fit::encoded_len(report);
                body_limit = refused.min(body_limit) / 2;
                let size = fit::fit(report, body_limit);
                if size < refused {
                    tracing::warn!(
                        refused,
                        size,
                        body_limit,
                        "the operator refused the report as too large: sending it shrunk"
                    );
                    FOLLOW_UP
                } else {
                    let retry = backoff.next_delay();
                    tracing::warn!(refused, retry_in = ?retry, "the operator refused the report as too large and it cannot shrink further");
                    retry
                }
            }
            Err(error) => {
                let retry = backoff.next_delay();
                let what = if error.is_auth() {
                    "the operator refused the agent's token"
                } else {
                    "report not delivered"
                };
                // As a `dyn Error`, so that the log line carries its causes too.
                let error = &error as &dyn std::error::Error;
                tracing::warn!(retry_in = ?retry, error, "{what}");
                retry
            }
        };
    }
}

/// How long a scan may read: half the interval, at most [`MAX_SCAN_BUDGET`].
pub fn scan_budget(interval: Duration) -> Duration {
    (interval / 2).min(MAX_SCAN_BUDGET)
}

/// How a scan on its thread ended.
enum ScanOutcome {
    Done(Result<Scan, ProcRootError>),
    /// Its thread did not come back (or no new scan may start): why.
    Stuck(String),
}

/// Runs each scan on a thread of its own, so that a read that never returns stalls neither
/// the reports nor the agent's shutdown: such a thread is abandoned with its scanner, and the
/// next scan gets a new scanner.
struct ScanThread {
    scanner: Option<Scanner>,
    /// Scan threads still running: between scans, only abandoned ones.
    running: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ScanThread {
    fn new(scanner: Scanner) -> Self {
        ScanThread {
            scanner: Some(scanner),
            running: Default::default(),
        }
    }

    async fn scan(
        &mut self,
        proc_root: &std::path::Path,
        options: ScanOptions,
        containers: Vec<ContainerIdentity>,
        budget: Duration,
    ) -> ScanOutcome {
        use std::sync::atomic::Ordering;
        let stuck = self.running.load(Ordering::Relaxed);
        if stuck >= MAX_STUCK_SCANS {
            return ScanOutcome::Stuck(format!(
                "{stuck} scans are stuck in reads that do not return: no new scan starts"
            ));
        }
        let mut scanner = match self.scanner.take() {
            Some(scanner) => scanner,
            None => match Scanner::new(proc_root) {
                Ok(scanner) => scanner,
                Err(error) => return ScanOutcome::Done(Err(error)),
            },
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let running = self.running.clone();
        running.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("scan".into())
            .spawn(move || {
                let scan = scanner.scan_within(&options, Some(&containers), budget);
                // Refused when this scan was abandoned: nothing is waiting for it any more.
                let _ = sender.send((scanner, scan));
                running.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(error) = spawned {
            self.running.fetch_sub(1, Ordering::Relaxed);
            return ScanOutcome::Stuck(format!("cannot start a scan thread: {error}"));
        }
        let limit = budget + STUCK_SCAN_GRACE;
        match tokio::time::timeout(limit, receiver).await {
            Ok(Ok((scanner, scan))) => {
                self.scanner = Some(scanner);
                ScanOutcome::Done(scan)
            }
            Ok(Err(_)) => ScanOutcome::Stuck("the scan thread failed".to_string()),
            Err(_) => ScanOutcome::Stuck(format!(
                "the scan did not finish within {:.1}s (a read that does not return): its thread is abandoned",
                limit.as_secs_f64()
            )),
        }
    }
}

/// The last findings again when no scan could finish, each container marked truncated with
/// the reason.
fn stale_report(config: &RunConfig, last: Option<&AgentReport>, reason: &str) -> AgentReport {
    let mut report = last.cloned().unwrap_or_else(|| AgentReport {
        version: report::VERSION,
        pod_name: config.pod_name.clone(),
        pod_namespace: config.pod_namespace.clone(),
        pod_uid: config.pod_uid.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        ..AgentReport::default()
    });
    let note = format!("facts of an earlier scan: {reason}");
    for container in &mut report.containers {
        container.truncated = true;
        if !container.unreadable.contains(&note) {
            container.unreadable.push(note.clone());
        }
    }
    report
}

fn agent_report(config: &RunConfig, scan: Scan) -> AgentReport {
    AgentReport {
        version: report::VERSION,
        pod_name: config.pod_name.clone(),
        pod_namespace: config.pod_namespace.clone(),
        pod_uid: config.pod_uid.clone(),
        scanned_at: Some(scan.scanned_at),
        containers: findings::containers(scan.containers),
        vanished_processes: scan.vanished,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        skipped: report::SkippedProcesses {
            gone: scan.vanished,
            unreadable: scan.unreadable,
            out_of_time: scan.not_read,
        },
        pids: scan.pids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        for base in [1u64, 2, 4, 8, 8, 8] {
            let delay = backoff.next_delay();
            let base = Duration::from_secs(base);
            assert!(
                delay >= base / 2 && delay <= base,
                "{delay:?} for base {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn backoff_is_capped_at_the_interval_with_jitter() {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        backoff.cap(Duration::from_secs(2));
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(2)),
            "{delays:?}"
        );
        // At the cap the delays still spread over its upper half.
        assert!(
            delays[5..].iter().all(|d| *d >= Duration::from_secs(1)),
            "{delays:?}"
        );
        // A longer interval lets it grow again, up to the overall maximum; a shorter one than
        // the smallest delay keeps the smallest.
        backoff.cap(Duration::from_secs(3600));
        let grown = (0..20).map(|_| backoff.next_delay()).max().unwrap();
        assert!(
            grown > Duration::from_secs(2) && grown <= BACKOFF_MAX,
            "{grown:?}"
        );
        backoff.cap(Duration::from_millis(10));
        assert!(backoff.next_delay() <= BACKOFF_MIN);
    }

    #[test]
    fn client_setup_refuses_bad_urls_and_certificates() {
        let error = |url: &str, ca: &str| {
            ReportClient::new(url, ca, "/token")
                .err()
                .unwrap()
                .to_string()
        };
        assert!(error("http://127.0.0.1:8443/report/v1", "x").contains("must be https://"));
        assert!(error("not a url at all", "x").contains("not a URL"));
        assert!(error("https://127.0.0.1:8443/report/v1", "").contains("no certificate"));
        assert!(
            error(
                "https://127.0.0.1:8443/report/v1",
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
            )
            .contains("CA certificate")
        );
    }

    #[test]
    fn a_scan_reads_for_half_the_interval_at_most_ten_seconds() {
        assert_eq!(
            scan_budget(Duration::from_secs(5)),
            Duration::from_millis(2500)
        );
        assert_eq!(
            scan_budget(Duration::from_secs(15)),
            Duration::from_millis(7500)
        );
        assert_eq!(scan_budget(Duration::from_secs(300)), MAX_SCAN_BUDGET);
    }

    #[test]
    fn a_stuck_scan_reports_the_last_findings_marked_with_the_reason() {
        let config = RunConfig {
            proc_root: "/proc".into(),
            pod_name: "p".into(),
            pod_namespace: "n".into(),
            pod_uid: "u".into(),
            interval: Duration::from_secs(15),
            collect: CollectRequest::default(),
        };
        let last = AgentReport {
            containers: vec![report::Container {
                name: "app".into(),
                process_count: 3,
                ..report::Container::default()
            }],
            ..AgentReport::default()
        };
        let stale = stale_report(&config, Some(&last), "stuck");
        assert_eq!(stale.containers[0].process_count, 3);
        assert!(stale.containers[0].truncated);
        assert_eq!(
            stale.containers[0].unreadable,
            ["facts of an earlier scan: stuck"]
        );
        // With no earlier findings: the pod's identity and nothing else.
        let empty = stale_report(&config, None, "stuck");
        assert_eq!(empty.pod_uid, "u");
        assert!(empty.containers.is_empty());
    }

    #[test]
    fn auth_refusals_are_told_apart() {
        let refused = |status| SendError::Refused {
            status,
            message: String::new(),
        };
        assert!(refused(StatusCode::UNAUTHORIZED).is_auth());
        assert!(refused(StatusCode::FORBIDDEN).is_auth());
        assert!(!refused(StatusCode::SERVICE_UNAVAILABLE).is_auth());
    }
}
