//! What GitOps tools make of a ProcessWatch's status.
//!
//! - Flux's `healthChecks` use kstatus: [`kstatus`] applies its generic rules (the ones for
//!   custom resources) to status fixtures.
//! - Argo CD runs `config/gitops/argocd-health.lua`: it runs here, in Lua 5.1 like Argo CD's
//!   gopher-lua, on the same fixtures.
//!
//! The fixtures under `tests/fixtures/cluster/` are statuses the operator wrote on the test
//! cluster (`kubectl get pw -o yaml`), the others are the rendering fixtures.

use std::path::PathBuf;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> Value {
    let path = repo().join("kubectl-procwatch/tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// kstatus's verdict on a resource.
#[derive(Debug, PartialEq)]
enum KStatus {
    InProgress(String),
    Current,
    Failed(String),
}

/// kstatus's generic rules (sigs.k8s.io/cli-utils/pkg/kstatus/status, `Compute` for a kind
/// without built-in rules): a generation not yet observed is in progress; `Reconciling=True`
/// is in progress, `Stalled=True` failed; else the `Ready` condition decides (True current,
/// False or Unknown in progress); a resource with none of these is current.
fn kstatus(obj: &Value) -> KStatus {
    let generation = obj["metadata"]["generation"].as_i64();
    let observed = obj["status"]["observedGeneration"].as_i64();
    if let (Some(generation), Some(observed)) = (generation, observed)
        && generation != observed
    {
        return KStatus::InProgress(format!(
            "generation is {generation}, but latest observed generation is {observed}"
        ));
    }
    let conditions = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |kind: &str| conditions.iter().find(|c| c["type"] == kind);
    let text = |c: &Value| {
        format!(
            "{}: {}",
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        )
    };
    if let Some(c) = find("Reconciling").filter(|c| c["status"] == "True") {
        return KStatus::InProgress(text(c));
    }
    if let Some(c) = find("Stalled").filter(|c| c["status"] == "True") {
        return KStatus::Failed(text(c));
    }
    match find("Ready") {
        Some(c) if c["status"] == "True" => KStatus::Current,
        Some(c) => KStatus::InProgress(text(c)),
        None => KStatus::Current,
    }
}

/// Argo CD's verdict: `config/gitops/argocd-health.lua` run with `obj` set, as Argo CD does.
fn argocd(obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(repo().join("config/gitops/argocd-health.lua")).unwrap();
    let lua = mlua::Lua::new();
    lua.globals()
        .set("obj", mlua::LuaSerdeExt::to_value(&lua, obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(&script).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

#[test]
fn ready_is_current_and_healthy() {
    let obj = fixture("cluster/ready.yaml");
    assert_eq!(kstatus(&obj), KStatus::Current);
    assert_eq!(
        argocd(&obj),
        ("Healthy".into(), "1 pod reports 3 processes".into())
    );
}

#[test]
fn attaching_is_in_progress() {
    let obj = fixture("cluster/attaching.yaml");
    let message = "1 of 1 selected pods have no agent (early-86478875df-wcs6d): they were created \
                   before this watch or while the webhook was unavailable; delete them so their \
                   controller recreates them with the agent, or set attach.existingPods: Evict";
    assert_eq!(
        kstatus(&obj),
        KStatus::InProgress(format!("PodsNeedRestart: {message}"))
    );
    assert_eq!(argocd(&obj), ("Progressing".into(), message.into()));
}

#[test]
fn no_pod_selected_is_in_progress() {
    let obj = fixture("empty.yaml");
    let message = "spec.selector matches no running pod in namespace shop";
    assert_eq!(
        kstatus(&obj),
        KStatus::InProgress(format!("NoPodsSelected: {message}"))
    );
    assert_eq!(argocd(&obj), ("Progressing".into(), message.into()));
}

/// Argo CD: Degraded. kstatus: failed, from the `Stalled=True` condition the operator adds
/// while the spec is invalid.
#[test]
fn invalid_spec_is_degraded_for_argocd_and_failed_for_kstatus() {
    let obj = fixture("cluster/invalid-spec.yaml");
    let message = "spec.selector: selector operator In on key \"app\" needs at least one value; \
                   fix the spec";
    assert_eq!(argocd(&obj), ("Degraded".into(), message.into()));
    assert_eq!(
        kstatus(&obj),
        KStatus::Failed(format!("InvalidSpec: {message}"))
    );
}

/// Every reason the operator gives a `Ready=False` condition, on the real attaching status.
#[test]
fn each_not_ready_reason() {
    let cases = [
        ("PodsNeedRestart", "Progressing"),
        ("EvictingPods", "Progressing"),
        ("NoAgents", "Progressing"),
        ("NoPodsSelected", "Progressing"),
        ("AgentsNotReporting", "Degraded"),
        ("EphemeralModeUnsupported", "Degraded"),
        ("InvalidSpec", "Degraded"),
    ];
    for (reason, health) in cases {
        let mut obj = fixture("cluster/attaching.yaml");
        for c in obj["status"]["conditions"].as_array_mut().unwrap() {
            if c["type"] == "Ready" {
                c["reason"] = reason.into();
                c["message"] = format!("because {reason}").into();
            }
        }
        let message = format!("because {reason}");
        assert_eq!(
            argocd(&obj),
            (health.to_string(), message.clone()),
            "{reason}"
        );
        assert_eq!(
            kstatus(&obj),
            KStatus::InProgress(format!("{reason}: {message}"))
        );
    }
}

#[test]
fn a_spec_not_yet_observed_is_in_progress() {
    let mut obj = fixture("cluster/ready.yaml");
    obj["metadata"]["generation"] = 2.into();
    assert_eq!(
        kstatus(&obj),
        KStatus::InProgress("generation is 2, but latest observed generation is 1".into())
    );
    assert_eq!(
        argocd(&obj),
        (
            "Progressing".into(),
            "Waiting for the procwatch operator to observe generation 2 (status is of generation 1)"
                .into()
        )
    );
}

#[test]
fn no_status_yet() {
    let mut obj = fixture("cluster/ready.yaml");
    obj.as_object_mut().unwrap().remove("status");
    // kstatus cannot tell a resource without conditions from one that never sets any.
    assert_eq!(kstatus(&obj), KStatus::Current);
    assert_eq!(
        argocd(&obj),
        (
            "Progressing".into(),
            "Waiting for the procwatch operator to write the status".into()
        )
    );
}

/// The manifest names the binary this crate builds, for every platform.
#[test]
fn krew_manifest_installs_this_binary() {
    let text = std::fs::read_to_string(repo().join("config/krew/procwatch.yaml")).unwrap();
    let manifest: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "procwatch");
    let platforms = manifest["spec"]["platforms"].as_array().unwrap();
    assert!(!platforms.is_empty());
    for p in platforms {
        assert_eq!(p["bin"], env!("CARGO_PKG_NAME"), "{p}");
        assert_eq!(p["files"][0]["from"], env!("CARGO_PKG_NAME"), "{p}");
    }
}
