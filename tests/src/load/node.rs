//! A Node object that no kubelet serves, kept Ready as a kubelet would keep it: its Lease in
//! `kube-node-lease` renewed and its Ready condition's heartbeat moved every
//! [`HEARTBEAT`]. Without that, the node lifecycle controller marks it unreachable and taints
//! it, and its pods are evicted mid-run. A taint keeps the scheduler's pods off it; the
//! harness's pods name the node and tolerate the taint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// How often the lease and the Ready condition are renewed (the kubelet's default is 10 s;
/// the node lifecycle controller gives up after 40 s).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The taint that keeps every other pod off the node.
pub const TAINT_KEY: &str = "procwatch.dev/simulated-node";

/// The node, kept Ready until [`SimulatedNode::remove`].
pub struct SimulatedNode {
    client: Client,
    name: String,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Lease renewals and status patches made, for the request figures.
    renewals: Arc<AtomicU64>,
}

impl SimulatedNode {
    /// Creates node `name` Ready and starts its heartbeat.
    pub async fn start(client: Client, name: &str) -> anyhow::Result<SimulatedNode> {
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, TAINT_KEY: "true"},
            },
            "spec": {
                "taints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            },
        }))?;
        nodes
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("creating node {name}"))?;
        let renewals = Arc::new(AtomicU64::new(0));
        beat(&client, name).await?;
        let heartbeat = tokio::spawn({
            let client = client.clone();
            let name = name.to_string();
            let renewals = renewals.clone();
            async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    match beat(&client, &name).await {
                        Ok(()) => {
                            renewals.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => eprintln!("procwatch-loadgen: node {name}: {error:#}"),
                    }
                }
            }
        });
        Ok(SimulatedNode {
            client,
            name: name.to_string(),
            heartbeat,
            renewals,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Heartbeats since the start (each one a lease update and a node status patch).
    pub fn heartbeats(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// Stops the heartbeat and deletes the node and its lease.
    pub async fn remove(self) -> anyhow::Result<()> {
        self.heartbeat.abort();
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .delete(&self.name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting node {}", self.name))?;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        // The lease is owned by the node: garbage collection takes it too, this is sooner.
        if let Err(error) = leases.delete(&self.name, &DeleteParams::default()).await {
            eprintln!("procwatch-loadgen: lease of node {}: {error}", self.name);
        }
        Ok(())
    }
}

/// One heartbeat: the lease renewed (created on the first) and the Ready condition patched.
async fn beat(client: &Client, name: &str) -> anyhow::Result<()> {
    // As the API server formats them: seconds for Time, microseconds for MicroTime.
    let now = Timestamp::now();
    let seconds = serde_json::to_value(Time(now))?;
    let micros = serde_json::to_value(MicroTime(now))?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": 40,
            "renewTime": micros,
        },
    });
    leases
        .patch(
            name,
            &PatchParams::apply("procwatch-loadgen").force(),
            &Patch::Apply(lease),
        )
        .await
        .context("renewing the node lease")?;
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = |type_: &str, status: &str, reason: &str| {
        json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": "simulated by procwatch-loadgen",
            "lastHeartbeatTime": seconds,
            "lastTransitionTime": seconds,
        })
    };
    let status = json!({
        "status": {
            "conditions": [
                ready("Ready", "True", "KubeletReady"),
                ready("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                ready("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                ready("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "5000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "5000"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        },
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
        .await
        .context("patching the node's Ready condition")?;
    Ok(())
}
