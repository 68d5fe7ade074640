//! The samples of config/samples, applied through the local overlay exactly as their comments
//! say: `kubectl apply -k config/overlays/loopback-samples -l procwatch.dev/sample=<sample>`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use crate::processwatch::wait_for_watch;
use crate::{Cluster, Operator, TestNamespace, repo_root};

/// The local overlay of the samples, relative to the repository root.
pub const OVERLAY: &str = "config/overlays/loopback-samples";
/// Pods start, get their agent and report within this.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(180);

/// One sample of the local overlay and what applying it must create.
pub struct Sample {
    /// Its `procwatch.dev/sample` label.
    pub label: &'static str,
    /// Prefix of the test's namespace.
    pub namespace: &'static str,
    /// The ProcessWatch it holds.
    pub watch: &'static str,
    /// The image of its workload, and the script that makes it.
    pub image: &'static str,
    pub make: &'static str,
    /// What `kubectl apply` must print, exactly.
    pub created: &'static [&'static str],
}

impl Sample {
    /// The common start of the experiments: the workload's image present, the operator
    /// deployed, a fresh namespace, the sample applied there, its watch's first report. Returns
    /// the operator and namespace guards (the namespace drops first), the moment of the apply
    /// and the seconds from it to the first report.
    pub async fn start(&self) -> anyhow::Result<(Operator, TestNamespace, Instant, f64)> {
        let cluster = Cluster::connect().await?;
        require_images(&cluster, &[self.image], self.make).await?;
        let operator = Operator::deploy(&cluster).await?;
        let ns = cluster.namespace(self.namespace).await?;

        let t0 = Instant::now();
        let applied = apply_sample(&ns, self.label).await?;
        expect_applied(&applied, self.created)?;
        let first = first_report(&ns, self.watch, t0).await?;
        Ok((operator, ns, t0, first))
    }
}

/// `kubectl apply -k config/overlays/loopback-samples -l procwatch.dev/sample=<sample>` into the
/// test's namespace; kubectl's output.
pub async fn apply_sample(ns: &TestNamespace, sample: &str) -> anyhow::Result<String> {
    let overlay = repo_root().join(OVERLAY);
    let selector = format!("procwatch.dev/sample={sample}");
    let out = ns
        .kubectl(&["apply", "-k", &overlay.to_string_lossy(), "-l", &selector])
        .await
        .with_context(|| format!("kubectl apply -k {OVERLAY} -l {selector}"))?;
    println!("$ kubectl apply -k {OVERLAY} -l {selector}\n{out}");
    Ok(out)
}

/// kubectl applied exactly these objects.
pub fn expect_applied(out: &str, want: &[&str]) -> anyhow::Result<()> {
    let got: BTreeSet<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let want: BTreeSet<&str> = want.iter().copied().collect();
    ensure!(got == want, "kubectl apply printed {got:?}, want {want:?}");
    Ok(())
}

/// Waits for the first report of any pod; seconds since `t0`.
pub async fn first_report(ns: &TestNamespace, watch: &str, t0: Instant) -> anyhow::Result<f64> {
    wait_for_watch(
        ns,
        watch,
        &format!("a first report in ProcessWatch {watch}"),
        REPORT_TIMEOUT,
        |pw| {
            let status = pw.status.as_ref()?;
            (status.reporting_pods > 0 && !status.pods.is_empty()).then_some(())
        },
    )
    .await?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Fails at once, with the command that makes them, when a node lacks one of the images.
pub async fn require_images(cluster: &Cluster, images: &[&str], make: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(cluster.client());
    let mut present = BTreeSet::new();
    for node in nodes.list(&ListParams::default()).await?.items {
        for image in node.status.and_then(|s| s.images).unwrap_or_default() {
            present.extend(image.names.unwrap_or_default());
        }
    }
    for image in images {
        // containerd reports local images as docker.io-less names, and sometimes only digests.
        if !present.iter().any(|n| n == image) {
            bail!(
                "image {image} is not on the cluster's nodes; make and import it with {make} \
                 (tests/run does it for you)"
            );
        }
    }
    Ok(())
}
