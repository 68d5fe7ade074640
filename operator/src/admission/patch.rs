//! The admission decision for one pod, and the JSON patch that injects the agent. Pure: the
//! handler feeds it the pod and the watches that select it.
//!
//! Every part of the patch is added only where the pod lacks it, so the webhook is idempotent:
//! a re-invoked webhook (`reinvocationPolicy: IfNeeded`) or a pod copied from an injected one
//! gets an empty patch, never a second agent.
//!
//! On servers with native sidecars the agent is the *first* init container: init containers
//! run one after the other and a sidecar starts when its turn comes, so being first lets the
//! agent see the app's own init containers too, and its start (no startup probe) delays them
//! by no more than a container start. The app's init containers keep their order. On older
//! servers the agent is appended to `containers`, so the app's first container stays the
//! default one for `kubectl exec` and `kubectl logs`.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use procwatch_crds::ProcessWatch;
use procwatch_crds::constants::{INJECT_LABEL, WATCHES_ANNOTATION};
use serde_json::Value;

use super::injection::{TOKEN_VOLUME_NAME, agent_container, is_token_volume, token_volume};
use super::{InjectionSettings, pod_has_agent};
use crate::metrics::label_values;

label_values!(
    /// What the webhook did with a pod; the label of the admissions metric.
    Outcome {
        /// The agent was added.
        Injected => "injected",
        /// The pod already had the agent (re-invocation or a copied spec).
        AlreadyInjected => "already_injected",
        /// No watch of the namespace selects the pod.
        SkippedNotSelected => "skipped_not_selected",
        /// Selected, but the pod carries `procwatch.dev/inject: "false"`.
        SkippedOptOut => "skipped_opt_out",
        /// Selected, but the pod cannot share its process namespace (see [`Decision::reason`]).
        SkippedUnsupported => "skipped_unsupported",
        /// Not a pod CREATE (the webhook configuration should not send these).
        Ignored => "ignored",
        /// Something went wrong; the pod was allowed unchanged.
        Error => "error",
    }
);

/// The decision for one pod: what happened and the patch to send back (maybe empty).
#[derive(Debug)]
pub struct Decision {
    pub outcome: Outcome,
    pub patch: Patch,
    /// Why a selected pod was left alone, for the log.
    pub reason: Option<&'static str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectionError {
    #[error("the pod already has a volume named {0:?} that is not procwatch's token volume")]
    VolumeNameTaken(String),
    #[error("token expiration of {0}s is below the API server's minimum of 600s")]
    TokenExpirationTooShort(i64),
}

/// Decides what to do with `pod`, given the watches that select it (sorted by name) and
/// whether its namespace's Pod Security level admits the ptrace agent.
pub fn decide(
    pod: &Pod,
    watches: &[&ProcessWatch],
    settings: &InjectionSettings,
    ca_pem: &str,
    ptrace_allowed: bool,
) -> Result<Decision, InjectionError> {
    let skip = |outcome, reason| {
        Ok(Decision {
            outcome,
            patch: Patch(Vec::new()),
            reason,
        })
    };
    if watches.is_empty() {
        return skip(Outcome::SkippedNotSelected, None);
    }
    if let Some(why) = declined(pod) {
        return skip(Outcome::SkippedOptOut, Some(why));
    }
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    if let Some(why) = unsupported(spec) {
        return skip(Outcome::SkippedUnsupported, Some(why));
    }
    settings.validate()?;
    let mut ops = Vec::new();

    if spec.share_process_namespace != Some(true) {
        ops.push(add(&["spec", "shareProcessNamespace"], Value::Bool(true)));
    }

    let already_injected = pod_has_agent(pod);
    if !already_injected {
        let mut agent = agent_container(settings, ca_pem, watches, ptrace_allowed);
        if settings.native_sidecars {
            agent.restart_policy = Some("Always".to_string());
            let agent = to_value(&agent);
            ops.push(match spec.init_containers {
                None => add(&["spec", "initContainers"], Value::Array(vec![agent])),
                Some(_) => add(&["spec", "initContainers", "0"], agent),
            });
        } else {
            ops.push(add(&["spec", "containers", "-"], to_value(&agent)));
        }
    }

    match spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == TOKEN_VOLUME_NAME)
    {
        Some(volume) if is_token_volume(volume) => {}
        Some(volume) => return Err(InjectionError::VolumeNameTaken(volume.name.clone())),
        None => {
            let volume = to_value(&token_volume(settings));
            ops.push(match spec.volumes {
                None => add(&["spec", "volumes"], Value::Array(vec![volume])),
                Some(_) => add(&["spec", "volumes", "-"], volume),
            });
        }
    }

    let mut names: Vec<&str> = watches
        .iter()
        .filter_map(|w| w.metadata.name.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    let names = names.join(",");
    let annotations = pod.metadata.annotations.as_ref();
    match annotations {
        None => ops.push(add(
            &["metadata", "annotations"],
            serde_json::json!({ WATCHES_ANNOTATION: names }),
        )),
        Some(a) if a.get(WATCHES_ANNOTATION) != Some(&names) => ops.push(add(
            &["metadata", "annotations", WATCHES_ANNOTATION],
            Value::String(names),
        )),
        Some(_) => {}
    }

    Ok(Decision {
        outcome: if already_injected {
            Outcome::AlreadyInjected
        } else {
            Outcome::Injected
        },
        patch: Patch(ops),
        reason: None,
    })
}

/// Why the pod's owner declined the agent, if they did: the opt-out label, or
/// `shareProcessNamespace: false` set explicitly (the agent needs it true, and switching it
/// silently would change how the workload runs). A restart changes neither.
pub fn declined(pod: &Pod) -> Option<&'static str> {
    let labels = pod.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(INJECT_LABEL)).map(String::as_str) == Some("false") {
        return Some("the pod is labelled procwatch.dev/inject=false");
    }
    let explicit_false = pod.spec.as_ref().and_then(|s| s.share_process_namespace) == Some(false);
    explicit_false.then_some("the pod sets shareProcessNamespace: false")
}

/// Why a pod can never run the agent, if it cannot. The API server refuses a hostPID pod with
/// shareProcessNamespace (injection would fail the pod's creation), and a Windows pod has no
/// /proc; a Windows pod may be placed by its nodeSelector alone, without `spec.os`.
pub fn unsupported(spec: &PodSpec) -> Option<&'static str> {
    const OS_LABEL: &str = "kubernetes.io/os";
    if spec.host_pid == Some(true) {
        return Some("the pod uses hostPID, which excludes shareProcessNamespace");
    }
    let windows_os = spec.os.as_ref().is_some_and(|os| os.name == "windows");
    let windows_node = spec
        .node_selector
        .as_ref()
        .and_then(|selector| selector.get(OS_LABEL))
        .is_some_and(|os| os == "windows");
    (windows_os || windows_node)
        .then_some("Windows pods have no /proc and cannot share a process namespace")
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    // Serialising k8s-openapi types into a JSON value cannot fail: no maps with non-string keys.
    serde_json::to_value(object).expect("k8s-openapi objects serialise to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::test_support::{FAKE_CA_PEM, settings, watch};
    use k8s_openapi::api::core::v1::Container;
    use procwatch_crds::constants::{AGENT_CONTAINER_NAME, TOKEN_AUDIENCE, TOKEN_MOUNT_PATH};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn pod(extra_spec: Value, labels: Value) -> Pod {
        let mut spec = json!({"containers": [{"name": "nginx", "image": "nginx"}]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra_spec.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    /// Applies the decision's patch to the pod's JSON the way the API server does.
    fn apply(pod: &Pod, decision: &Decision) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut doc, &decision.patch).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    fn injected(pod: &Pod, watches: &[&ProcessWatch], native: bool) -> (Outcome, Pod) {
        let decision = decide(pod, watches, &settings(native), FAKE_CA_PEM, true).unwrap();
        let patched = apply(pod, &decision);
        // Idempotent: the patched pod needs nothing more.
        let again = decide(&patched, watches, &settings(native), FAKE_CA_PEM, true).unwrap();
        assert_eq!(again.outcome, Outcome::AlreadyInjected);
        assert!(again.patch.0.is_empty(), "second patch: {:?}", again.patch);
        (decision.outcome, patched)
    }

    fn agents(containers: &Option<Vec<Container>>) -> Vec<&Container> {
        containers
            .iter()
            .flatten()
            .filter(|c| c.name == AGENT_CONTAINER_NAME)
            .collect()
    }

    fn names(containers: &Option<Vec<Container>>) -> Vec<&str> {
        containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn plain_pod_on_old_server_gets_agent_container() {
        let w = watch("web", &[("app", "nginx")]);
        let p = pod(json!({}), json!({"app": "nginx"}));
        let (outcome, patched) = injected(&p, &[&w], false);
        assert_eq!(outcome, Outcome::Injected);
        let spec = patched.spec.unwrap();
        assert_eq!(spec.share_process_namespace, Some(true));
        assert_eq!(
            names(&spec.containers.clone().into()),
            ["nginx", AGENT_CONTAINER_NAME]
        );
        assert_eq!(spec.init_containers, None);
        let agent = &spec.containers[1];
        assert_eq!(agent.restart_policy, None);
        let volumes = spec.volumes.unwrap();
        assert_eq!(volumes.len(), 1);
        let projection = volumes[0]
            .projected
            .as_ref()
            .unwrap()
            .sources
            .as_ref()
            .unwrap()[0]
            .service_account_token
            .clone()
            .unwrap();
        assert_eq!(projection.audience.as_deref(), Some(TOKEN_AUDIENCE));
        assert_eq!(projection.expiration_seconds, Some(3600));
        // The token is mounted into the agent only.
        assert!(spec.containers[0].volume_mounts.is_none());
        // Also at the service-account path, which keeps the pod's API token out of the agent.
        let mounts: Vec<_> = agent
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|mount| {
                (
                    mount.name.as_str(),
                    mount.mount_path.as_str(),
                    mount.read_only,
                )
            })
            .collect();
        assert_eq!(
            mounts,
            [
                (TOKEN_VOLUME_NAME, TOKEN_MOUNT_PATH, Some(true)),
                (
                    TOKEN_VOLUME_NAME,
                    super::super::injection::SERVICE_ACCOUNT_MOUNT_PATH,
                    Some(true)
                )
            ]
        );
        let annotations = patched.metadata.annotations.unwrap();
        assert_eq!(annotations[WATCHES_ANNOTATION], "web");
    }

    #[test]
    fn new_server_gets_native_sidecar_first_keeping_init_order() {
        let w = watch("web", &[("app", "nginx")]);
        let p = pod(
            json!({"initContainers": [{"name": "migrate", "image": "m"}, {"name": "seed", "image": "s"}]}),
            json!({"app": "nginx"}),
        );
        let (outcome, patched) = injected(&p, &[&w], true);
        assert_eq!(outcome, Outcome::Injected);
        let spec = patched.spec.unwrap();
        assert_eq!(
            names(&spec.init_containers),
            [AGENT_CONTAINER_NAME, "migrate", "seed"]
        );
        assert_eq!(
            spec.init_containers.as_ref().unwrap()[0]
                .restart_policy
                .as_deref(),
            Some("Always")
        );
        assert_eq!(names(&Some(spec.containers)), ["nginx"]);
    }

    #[test]
    fn new_server_without_init_containers_creates_the_list() {
        let w = watch("web", &[]);
        let p = pod(json!({}), json!({}));
        let (_, patched) = injected(&p, &[&w], true);
        assert_eq!(
            names(&patched.spec.unwrap().init_containers),
            [AGENT_CONTAINER_NAME]
        );
    }

    #[test]
    fn init_containers_on_old_server_are_untouched() {
        let w = watch("web", &[]);
        let p = pod(
            json!({"initContainers": [{"name": "migrate", "image": "m"}]}),
            json!({}),
        );
        let (_, patched) = injected(&p, &[&w], false);
        let spec = patched.spec.unwrap();
        assert_eq!(names(&spec.init_containers), ["migrate"]);
        assert_eq!(
            names(&Some(spec.containers)),
            ["nginx", AGENT_CONTAINER_NAME]
        );
    }

    #[test]
    fn pod_already_sharing_keeps_it_and_its_volumes() {
        let w = watch("web", &[]);
        let p = pod(
            json!({"shareProcessNamespace": true,
                   "volumes": [{"name": "data", "emptyDir": {}}]}),
            json!({}),
        );
        let decision = decide(&p, &[&w], &settings(false), FAKE_CA_PEM, true).unwrap();
        assert!(
            !decision
                .patch
                .0
                .iter()
                .any(|op| op.path() == "/spec/shareProcessNamespace")
        );
        let patched = apply(&p, &decision);
        let spec = patched.spec.unwrap();
        assert_eq!(spec.share_process_namespace, Some(true));
        let volumes: Vec<_> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(volumes, ["data", TOKEN_VOLUME_NAME]);
    }

    #[test]
    fn existing_agent_is_never_doubled_on_either_server() {
        let w = watch("web", &[]);
        for native in [false, true] {
            let once = apply(
                &pod(json!({}), json!({})),
                &decide(
                    &pod(json!({}), json!({})),
                    &[&w],
                    &settings(native),
                    FAKE_CA_PEM,
                    true,
                )
                .unwrap(),
            );
            // Re-invoked after the server flipped its sidecar support: still one agent.
            let decision = decide(&once, &[&w], &settings(!native), FAKE_CA_PEM, true).unwrap();
            assert_eq!(decision.outcome, Outcome::AlreadyInjected);
            assert!(decision.patch.0.is_empty());
            let spec = apply(&once, &decision).spec.unwrap();
            assert_eq!(
                agents(&Some(spec.containers)).len() + agents(&spec.init_containers).len(),
                1
            );
        }
    }

    #[test]
    fn agent_added_by_hand_gets_the_missing_pieces_only() {
        let w = watch("web", &[]);
        let p = pod(
            json!({"containers": [{"name": "nginx", "image": "nginx"},
                                  {"name": AGENT_CONTAINER_NAME, "image": "mine"}]}),
            json!({}),
        );
        let (outcome, patched) = injected(&p, &[&w], false);
        assert_eq!(outcome, Outcome::AlreadyInjected);
        let spec = patched.spec.unwrap();
        assert_eq!(agents(&Some(spec.containers.clone())).len(), 1);
        assert_eq!(spec.containers[1].image.as_deref(), Some("mine"));
        assert_eq!(spec.share_process_namespace, Some(true));
    }

    #[test]
    fn automount_disabled_still_gets_its_own_token() {
        let w = watch("web", &[]);
        let p = pod(json!({"automountServiceAccountToken": false}), json!({}));
        let (_, patched) = injected(&p, &[&w], false);
        let spec = patched.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(spec.volumes.unwrap().iter().any(is_token_volume));
    }

    #[test]
    fn several_watches_merge_into_one_agent() {
        let mut slow = watch("slow", &[]);
        slow.spec.interval = "1m".parse().unwrap();
        let mut fast = watch("fast", &[]);
        fast.spec.interval = "5s".parse().unwrap();
        fast.spec.agent.ptrace = true;
        let p = pod(json!({}), json!({}));
        let (_, patched) = injected(&p, &[&fast, &slow], false);
        let spec = patched.spec.unwrap();
        let agent = agents(&Some(spec.containers.clone()))[0].clone();
        let interval = agent
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "PROCWATCH_INTERVAL");
        assert_eq!(interval.unwrap().value.as_deref(), Some("5s"));
        let caps = agent.security_context.unwrap().capabilities.unwrap();
        assert_eq!(caps.add, Some(vec!["SYS_PTRACE".to_string()]));
        assert_eq!(
            patched.metadata.annotations.unwrap()[WATCHES_ANNOTATION],
            "fast,slow"
        );
    }

    #[test]
    fn annotation_joins_existing_annotations() {
        let w = watch("web", &[]);
        let mut p = pod(json!({}), json!({}));
        p.metadata.annotations = Some(BTreeMap::from([("team".to_string(), "a".to_string())]));
        let (_, patched) = injected(&p, &[&w], false);
        let annotations = patched.metadata.annotations.unwrap();
        assert_eq!(annotations["team"], "a");
        assert_eq!(annotations[WATCHES_ANNOTATION], "web");
    }

    #[test]
    fn not_selected_and_opted_out_pods_are_untouched() {
        let w = watch("web", &[]);
        let p = pod(json!({}), json!({"app": "nginx"}));
        let none = decide(&p, &[], &settings(true), FAKE_CA_PEM, true).unwrap();
        assert_eq!(none.outcome, Outcome::SkippedNotSelected);
        assert!(none.patch.0.is_empty());

        let opted_out = pod(json!({}), json!({INJECT_LABEL: "false"}));
        let decision = decide(&opted_out, &[&w], &settings(true), FAKE_CA_PEM, true).unwrap();
        assert_eq!(decision.outcome, Outcome::SkippedOptOut);
        assert!(decision.patch.0.is_empty());

        // Any other value of the label does not opt out.
        let opted_in = pod(json!({}), json!({INJECT_LABEL: "true"}));
        let decision = decide(&opted_in, &[&w], &settings(true), FAKE_CA_PEM, true).unwrap();
        assert_eq!(decision.outcome, Outcome::Injected);
    }

    #[test]
    fn explicit_share_process_namespace_false_is_the_owners_opt_out() {
        let w = watch("web", &[]);
        let declined = pod(json!({"shareProcessNamespace": false}), json!({}));
        let decision = decide(&declined, &[&w], &settings(true), FAKE_CA_PEM, true).unwrap();
        assert_eq!(decision.outcome, Outcome::SkippedOptOut);
        assert!(decision.patch.0.is_empty());
        assert_eq!(
            decision.reason,
            Some("the pod sets shareProcessNamespace: false")
        );
        // Unset is no decision: the webhook sets it.
        let unset = pod(json!({}), json!({}));
        let (outcome, patched) = injected(&unset, &[&w], true);
        assert_eq!(outcome, Outcome::Injected);
        assert_eq!(patched.spec.unwrap().share_process_namespace, Some(true));
    }

    #[test]
    fn pods_that_cannot_share_their_process_namespace_are_untouched() {
        let w = watch("web", &[]);
        for extra in [
            json!({"hostPID": true}),
            json!({"os": {"name": "windows"}}),
            json!({"nodeSelector": {"kubernetes.io/os": "windows"}}),
        ] {
            let p = pod(extra.clone(), json!({}));
            let decision = decide(&p, &[&w], &settings(true), FAKE_CA_PEM, true).unwrap();
            assert_eq!(decision.outcome, Outcome::SkippedUnsupported, "{extra}");
            assert!(decision.patch.0.is_empty());
            assert!(decision.reason.is_some());
        }
        let linux = pod(
            json!({"os": {"name": "linux"}, "hostPID": false,
                   "nodeSelector": {"kubernetes.io/os": "linux"}}),
            json!({}),
        );
        let decision = decide(&linux, &[&w], &settings(true), FAKE_CA_PEM, true).unwrap();
        assert_eq!(decision.outcome, Outcome::Injected);
    }

    #[test]
    fn foreign_volume_with_our_name_is_an_error() {
        let w = watch("web", &[]);
        let p = pod(
            json!({"volumes": [{"name": TOKEN_VOLUME_NAME, "emptyDir": {}}]}),
            json!({}),
        );
        assert_eq!(
            decide(&p, &[&w], &settings(false), FAKE_CA_PEM, true).unwrap_err(),
            InjectionError::VolumeNameTaken(TOKEN_VOLUME_NAME.to_string())
        );
    }

    #[test]
    fn too_short_token_expiration_is_an_error() {
        let w = watch("web", &[]);
        let mut s = settings(false);
        s.token_expiration_seconds = 60;
        assert_eq!(
            decide(&pod(json!({}), json!({})), &[&w], &s, FAKE_CA_PEM, true).unwrap_err(),
            InjectionError::TokenExpirationTooShort(60)
        );
    }
}
