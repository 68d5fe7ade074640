//! Connecting to the cluster, and a fresh namespace per test.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::wait::{Wait, wait_for};

/// Kubernetes version the local test cluster is built at (tests/cluster/lib.sh).
const LOCAL_K8S_VERSION: &str = "1.20.2";

/// The work dir of the cluster `tests/cluster/up` starts: `$PROCWATCH_CLUSTER_DIR`, default
/// `/var/tmp/procwatch-cluster`. Holds `admin.kubeconfig` and the daemons' `logs/`.
pub fn cluster_dir() -> PathBuf {
    std::env::var_os("PROCWATCH_CLUSTER_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/procwatch-cluster"))
}

/// `tests/cluster/` of this checkout (build, up, down, image, project-image).
pub fn cluster_scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster")
}

/// Where the local cluster's binaries are cached (`tests/cluster/build`).
fn cache_bin_dir() -> PathBuf {
    let root = std::env::var_os("PROCWATCH_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/procwatch"));
    root.join(format!("k8s-{LOCAL_K8S_VERSION}")).join("bin")
}

/// Where the connection settings came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeconfigSource {
    /// The `KUBECONFIG` environment variable: any cluster (kind, a real one, ours).
    Env(String),
    /// `KUBECONFIG` unset: the local test cluster's `admin.kubeconfig`.
    Local(PathBuf),
    /// Neither: kube's defaults (`~/.kube/config`, or in-cluster).
    Default,
}

/// A reachable cluster: a client plus what `kubectl` needs to reach the same server.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    source: KubeconfigSource,
    kubectl: PathBuf,
    server_version: Info,
}

/// `tests/cluster/up` runs at most once per test process (PROCWATCH_E2E_UP=1).
static STARTED: Mutex<bool> = Mutex::new(false);

impl Cluster {
    /// Connects to the cluster of `KUBECONFIG`, else to the local test cluster, else to kube's
    /// default configuration, and checks the server answers.
    ///
    /// If none is reachable and `PROCWATCH_E2E_UP=1` (and `KUBECONFIG` is unset), runs
    /// `tests/cluster/up` once per test process and connects to it; it stays up for later tests
    /// (bring it down with `tests/cluster/down`). Otherwise fails with instructions.
    pub async fn connect() -> anyhow::Result<Self> {
        match Self::try_connect().await {
            Ok(c) => Ok(c),
            Err(err) => {
                let source = Self::detect_source();
                let auto_up = std::env::var("PROCWATCH_E2E_UP").is_ok_and(|v| v == "1");
                if auto_up && !matches!(source, KubeconfigSource::Env(_)) {
                    Self::start_local_cluster()?;
                    return Self::try_connect().await;
                }
                Err(err.context(no_cluster_help(&source)))
            }
        }
    }

    fn detect_source() -> KubeconfigSource {
        if let Some(v) = std::env::var("KUBECONFIG").ok().filter(|v| !v.is_empty()) {
            return KubeconfigSource::Env(v);
        }
        let local = cluster_dir().join("admin.kubeconfig");
        if local.is_file() {
            KubeconfigSource::Local(local)
        } else {
            KubeconfigSource::Default
        }
    }

    async fn try_connect() -> anyhow::Result<Self> {
        let source = Self::detect_source();
        let config = match &source {
            KubeconfigSource::Local(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
            }
            KubeconfigSource::Env(_) | KubeconfigSource::Default => Config::infer().await?,
        };
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config)?;
        let server_version =
            tokio::time::timeout(Duration::from_secs(15), client.apiserver_version())
                .await
                .map_err(|_| anyhow::anyhow!("no answer from {server} within 15s"))?
                .with_context(|| format!("GET {server}/version"))?;
        let kubectl = match std::env::var_os("KUBECTL").filter(|v| !v.is_empty()) {
            Some(k) => PathBuf::from(k),
            // The local cluster's own kubectl matches its version (no skew warnings).
            None if matches!(source, KubeconfigSource::Local(_))
                && cache_bin_dir().join("kubectl").is_file() =>
            {
                cache_bin_dir().join("kubectl")
            }
            None => PathBuf::from("kubectl"),
        };
        eprintln!(
            "procwatch-e2e: connected to {server} ({}, kubeconfig from {source:?})",
            server_version.git_version
        );
        Ok(Cluster {
            client,
            source,
            kubectl,
            server_version,
        })
    }

    fn start_local_cluster() -> anyhow::Result<()> {
        let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
        if *started {
            return Ok(());
        }
        let up = cluster_scripts_dir().join("up");
        eprintln!(
            "procwatch-e2e: no cluster reachable, running {}",
            up.display()
        );
        let status = std::process::Command::new(&up)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", up.display()))?;
        if !status.success() {
            bail!(
                "{} failed ({status}); logs in {}/logs",
                up.display(),
                cluster_dir().display()
            );
        }
        *started = true;
        Ok(())
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn source(&self) -> &KubeconfigSource {
        &self.source
    }

    /// The server's `/version`.
    pub fn server_version(&self) -> &Info {
        &self.server_version
    }

    /// True when talking to the cluster `tests/cluster/up` started here (its daemon logs are
    /// readable under [`cluster_dir`]).
    pub fn is_local(&self) -> bool {
        match &self.source {
            KubeconfigSource::Local(_) => true,
            KubeconfigSource::Env(v) => Path::new(v) == cluster_dir().join("admin.kubeconfig"),
            KubeconfigSource::Default => false,
        }
    }

    /// Stops the local cluster's API server (`tests/cluster/apiserver stop`); every other
    /// daemon keeps running. The outage ends with [`ApiServerOutage::end`], or when the guard
    /// drops (a failed test leaves no cluster without its API server).
    pub async fn stop_api_server(&self) -> anyhow::Result<ApiServerOutage> {
        if !self.is_local() {
            bail!("only the local test cluster's API server can be stopped by a test");
        }
        run_api_server_script("stop").await?;
        Ok(ApiServerOutage { ended: false })
    }

    /// A `kubectl` command aimed at this cluster (KUBECTL overrides the binary).
    pub fn kubectl_command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.kubectl);
        if let KubeconfigSource::Local(path) = &self.source {
            cmd.arg("--kubeconfig").arg(path);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// `kubectl <plugin>` aimed at this cluster. kubectl refuses flags before a plugin's name,
    /// so the local cluster's kubeconfig goes in `KUBECONFIG` instead of `--kubeconfig`.
    pub fn kubectl_plugin_command(&self, plugin: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.kubectl);
        if let KubeconfigSource::Local(path) = &self.source {
            cmd.env("KUBECONFIG", path);
        }
        cmd.arg(plugin).stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs kubectl with `args`; its stdout, or an error carrying its stderr.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .kubectl_command()
            .args(args)
            .output()
            .await
            .with_context(|| {
                format!(
                    "running {} (set KUBECTL to its path)",
                    self.kubectl.display()
                )
            })?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a fresh namespace `pw-e2e-<test>-<random>` and waits for its `default`
    /// ServiceAccount. It is deleted when the returned guard drops; unless
    /// [`TestNamespace::finish`] was called first, the drop prints diagnostics.
    pub async fn namespace(&self, test: &str) -> anyhow::Result<TestNamespace> {
        let name = namespace_name(test);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("procwatch.dev/e2e".to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        // From here on the guard owns the namespace, so it goes away even if the wait fails.
        let guard = TestNamespace {
            cluster: self.clone(),
            name,
            finished: AtomicBool::new(false),
        };
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &guard.name);
        // Before 1.24 the ServiceAccount admission plugin refuses pods ("No API token found for
        // service account") until the token controller has given `default` its token Secret,
        // a moment after the ServiceAccount itself.
        let needs_token_secret = minor_version(&self.server_version).is_some_and(|m| m < 24);
        wait_for(
            &format!(
                "ServiceAccount {}/default (made by the controller-manager){}",
                guard.name,
                if needs_token_secret {
                    " and its token Secret"
                } else {
                    ""
                }
            ),
            Duration::from_secs(60),
            || async {
                Ok(match sas.get_opt("default").await? {
                    None => Wait::not_yet("absent"),
                    Some(sa)
                        if needs_token_secret && sa.secrets.as_ref().is_none_or(Vec::is_empty) =>
                    {
                        Wait::not_yet("no token Secret yet")
                    }
                    Some(sa) => Wait::Done(sa),
                })
            },
        )
        .await?;
        Ok(guard)
    }
}

/// The minor version of a 1.x server (`"20"`, or `"20+"` on some distributions).
/// The local cluster's API server, stopped by [`Cluster::stop_api_server`].
#[must_use = "the API server stays stopped until the outage ends"]
pub struct ApiServerOutage {
    ended: bool,
}

impl ApiServerOutage {
    /// Starts the API server again; returns once its `/readyz` answers.
    pub async fn end(mut self) -> anyhow::Result<()> {
        self.ended = true;
        run_api_server_script("start").await
    }
}

impl Drop for ApiServerOutage {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let script = cluster_scripts_dir().join("apiserver");
        match std::process::Command::new(&script).arg("start").status() {
            Ok(status) if status.success() => {}
            outcome => eprintln!("{} start: {outcome:?}", script.display()),
        }
    }
}

/// `tests/cluster/apiserver VERB`, its output passed through.
async fn run_api_server_script(verb: &str) -> anyhow::Result<()> {
    let script = cluster_scripts_dir().join("apiserver");
    let status = tokio::process::Command::new(&script)
        .arg(verb)
        .stdin(Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {} {verb}", script.display()))?;
    if !status.success() {
        bail!("{} {verb} failed ({status})", script.display());
    }
    Ok(())
}

fn minor_version(info: &Info) -> Option<u32> {
    if info.major.trim_end_matches('+') != "1" {
        return None;
    }
    let digits: String = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn no_cluster_help(source: &KubeconfigSource) -> String {
    let dir = cluster_dir();
    let scripts = cluster_scripts_dir();
    let tried = match source {
        KubeconfigSource::Env(v) => format!("KUBECONFIG={v}"),
        KubeconfigSource::Local(p) => format!("{} (left by tests/cluster/up)", p.display()),
        KubeconfigSource::Default => {
            format!(
                "kube's defaults (KUBECONFIG unset, no {}/admin.kubeconfig)",
                dir.display()
            )
        }
    };
    format!(
        "no Kubernetes cluster reachable through {tried}.\n\
         Start the local test cluster (as root):\n  {s}/build && {s}/up\n\
         or run everything at once with {t}/run-e2e; \
         or set PROCWATCH_E2E_UP=1 to let the tests run {s}/up themselves; \
         or point KUBECONFIG at another cluster (see tests/README.md).",
        s = scripts.display(),
        t = scripts.parent().unwrap_or(&scripts).display(),
    )
}

/// `pw-e2e-<test>-<suffix>`, a valid DNS label (at most 63 characters).
fn namespace_name(test: &str) -> String {
    let mut slug: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    slug.truncate(40);
    let slug = slug.trim_matches('-');
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut n = (nanos ^ (u128::from(std::process::id()) << 64)) as u64;
    let mut suffix = String::new();
    for _ in 0..6 {
        suffix.push(char::from_digit((n % 36) as u32, 36).unwrap_or('x'));
        n /= 36;
    }
    if slug.is_empty() {
        format!("pw-e2e-{suffix}")
    } else {
        format!("pw-e2e-{slug}-{suffix}")
    }
}

/// A namespace that exists for one test. Dropping it deletes the namespace (in the background on
/// the server) even when the test fails; if the test did not call [`finish`](Self::finish) —
/// an assertion panicked or an error was returned — it first prints the namespace's pods,
/// events and logs and, for the local cluster, the tail of each daemon's log.
/// `PROCWATCH_E2E_KEEP=1` keeps failed tests' namespaces for inspection.
pub struct TestNamespace {
    cluster: Cluster,
    name: String,
    finished: AtomicBool,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    /// `Api<K>` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client(), &self.name)
    }

    /// The pods of the label `selector` that are not being deleted, sorted by name.
    pub async fn live_pods(&self, selector: &str) -> anyhow::Result<Vec<Pod>> {
        let list = self
            .api::<Pod>()
            .list(&ListParams::default().labels(selector))
            .await?;
        let mut pods: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// Server-side applies the YAML documents; namespaced objects land in this namespace.
    pub async fn apply_yaml(&self, yaml: &str) -> anyhow::Result<Vec<DynamicObject>> {
        crate::apply::apply_yaml(&self.client(), &self.name, yaml).await
    }

    /// kubectl with `-n <this namespace>` prepended to `args`.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all).await
    }

    /// `kubectl exec` of `command` in `container` of `pod`; its stdout.
    pub async fn exec(
        &self,
        pod: &str,
        container: &str,
        command: &[&str],
    ) -> anyhow::Result<String> {
        let mut args = vec!["exec", pod, "-c", container, "--"];
        args.extend_from_slice(command);
        self.kubectl(&args).await
    }

    /// Marks the test as passed: the drop then deletes the namespace without diagnostics.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    /// The namespace's pods, events and container logs, and the cluster daemons' log tails.
    pub async fn diagnostics(&self) -> String {
        diagnostics(&self.cluster, &self.name).await
    }
}

async fn diagnostics(cluster: &Cluster, namespace: &str) -> String {
    let mut out = crate::diagnostics::namespace_report(&cluster.client(), namespace).await;
    if cluster.is_local() {
        out.push_str(&crate::diagnostics::daemon_logs(30));
    }
    out
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (failed, keep) = failed_and_kept(&self.finished);
        let name = self.name.clone();
        let what = format!("clean up namespace {name}");
        run_cleanup(&what, move || async move {
            let Ok(fresh) = Cluster::try_connect().await else {
                eprintln!("procwatch-e2e: cluster gone; namespace {name} not deleted");
                return;
            };
            if failed {
                eprintln!(
                    "\n===== procwatch-e2e: test failed; diagnostics of namespace {name} =====\n{}\n===== end of diagnostics =====",
                    diagnostics(&fresh, &name).await
                );
            }
            if keep {
                eprintln!("procwatch-e2e: PROCWATCH_E2E_KEEP=1: namespace {name} kept");
            } else {
                let api: Api<Namespace> = Api::all(fresh.client());
                if let Err(e) = api.delete(&name, &DeleteParams::background()).await {
                    eprintln!("procwatch-e2e: deleting namespace {name}: {e}");
                }
            }
        });
    }
}

/// Whether the guarded test failed (panicking, or never called `finish`), and whether the user
/// asked to keep what a failed test leaves (`PROCWATCH_E2E_KEEP=1`).
pub(crate) fn failed_and_kept(finished: &AtomicBool) -> (bool, bool) {
    let failed = std::thread::panicking() || !finished.load(Ordering::SeqCst);
    let keep = failed && std::env::var("PROCWATCH_E2E_KEEP").is_ok_and(|v| v == "1");
    (failed, keep)
}

/// Runs a guard's clean-up to its end from a thread of its own with its own runtime: the
/// test's runtime may be single-threaded and busy unwinding, and a kube Client belongs to the
/// runtime that made it, so the clean-up makes a fresh one.
pub(crate) fn run_cleanup<F, Fut>(what: &str, cleanup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let what = what.to_string();
    let work = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(cleanup()),
            Err(e) => eprintln!("procwatch-e2e: no runtime to {what}: {e}"),
        }
    });
    let _ = work.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_versions() {
        let info = |major: &str, minor: &str| Info {
            major: major.into(),
            minor: minor.into(),
            ..Default::default()
        };
        assert_eq!(minor_version(&info("1", "20")), Some(20));
        assert_eq!(minor_version(&info("1", "27+")), Some(27));
        assert_eq!(minor_version(&info("2", "0")), None);
        assert_eq!(minor_version(&info("", "")), None);
    }

    #[test]
    fn namespace_names_are_dns_labels() {
        for test in ["cluster", "Shared PID / cgroup_ids", "", &"x".repeat(100)] {
            let n = namespace_name(test);
            assert!(n.len() <= 63, "{n}");
            assert!(n.starts_with("pw-e2e-"), "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.ends_with('-') && !n.contains("--"), "{n}");
        }
    }
}
