//! The kustomize manifests under `config/` agree with the code: the CRD copy with the
//! generated CRD, every field with the Kubernetes API (no misspelt field silently dropped),
//! and the names that tie the Deployment, Service, RBAC and webhook configuration together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount, ServicePort};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use procwatch_crds::ProcessWatch;
use procwatch_crds::constants::{INJECT_LABEL, REPORT_PATH};
use procwatch_operator::admission::MUTATE_PATH;
use procwatch_operator::selector;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[path = "../../tests/support/skip.rs"]
mod skip;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(relative)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Parses `value` as `T` and checks that nothing was lost on the way: a misspelt or
/// misplaced field would vanish from the round trip.
fn strict<T: DeserializeOwned + Serialize>(value: &Value) -> T {
    let typed: T =
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, value, "fields the API does not know were dropped");
    typed
}

fn one<T: DeserializeOwned + Serialize>(relative: &str) -> T {
    let docs = documents(relative);
    assert_eq!(docs.len(), 1, "{relative}");
    strict(&docs[0])
}

struct Config {
    namespace: Namespace,
    deployment: Deployment,
    service: Service,
    account: ServiceAccount,
    cluster_role: ClusterRole,
    cluster_binding: ClusterRoleBinding,
    role: Role,
    binding: RoleBinding,
    webhook: MutatingWebhookConfiguration,
    network_policy: NetworkPolicy,
}

fn config() -> Config {
    Config {
        namespace: one("config/manager/namespace.yaml"),
        deployment: one("config/manager/deployment.yaml"),
        service: one("config/manager/service.yaml"),
        account: one("config/rbac/service_account.yaml"),
        cluster_role: one("config/rbac/cluster_role.yaml"),
        cluster_binding: one("config/rbac/cluster_role_binding.yaml"),
        role: one("config/rbac/role.yaml"),
        binding: one("config/rbac/role_binding.yaml"),
        webhook: one("config/webhook/mutating_webhook_configuration.yaml"),
        network_policy: one("config/manager/network_policy.yaml"),
    }
}

/// The Deployment's one container, the operator.
fn operator_container(deployment: &Deployment) -> &Container {
    &deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

/// The operator's flags as `name -> values`.
fn flags(deployment: &Deployment) -> BTreeMap<String, Vec<String>> {
    let container = operator_container(deployment);
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for arg in container.args.iter().flatten() {
        let (name, value) = arg.split_once('=').expect("flags are written --name=value");
        flags
            .entry(name.to_string())
            .or_default()
            .push(value.to_string());
    }
    flags
}

fn flag(flags: &BTreeMap<String, Vec<String>>, name: &str) -> String {
    let values = &flags[name];
    assert_eq!(values.len(), 1, "{name}");
    values[0].clone()
}

fn names_for<'a>(
    rules: &'a [PolicyRule],
    resource: &str,
    verb: &str,
) -> Option<&'a Option<Vec<String>>> {
    rules
        .iter()
        .find(|r| {
            r.resources.iter().flatten().any(|x| x == resource) && r.verbs.iter().any(|v| v == verb)
        })
        .map(|r| &r.resource_names)
}

/// The Service's port that leads to the container port named `target`.
fn service_port<'a>(service: &'a Service, target: &str) -> &'a ServicePort {
    service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .find(|p| p.target_port == Some(IntOrString::String(target.to_string())))
        .unwrap_or_else(|| panic!("no Service port for {target}"))
}

#[test]
fn webhook_configuration_points_at_the_operator_and_fails_open() {
    let c = config();
    let webhooks = c.webhook.webhooks.as_ref().unwrap();
    assert_eq!(webhooks.len(), 1);
    let hook = &webhooks[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.admission_review_versions, ["v1"]);
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert_eq!(hook.timeout_seconds, Some(5));
    let rule = &hook.rules.as_ref().unwrap()[0];
    assert_eq!(
        rule.operations.as_deref(),
        Some(&["CREATE".to_string()][..])
    );
    assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
    assert!(
        hook.client_config.ca_bundle.is_none(),
        "the operator owns caBundle"
    );

    let service = hook.client_config.service.as_ref().unwrap();
    assert_eq!(service.path.as_deref(), Some(MUTATE_PATH));
    assert_eq!(Some(&service.name), c.service.metadata.name.as_ref());
    assert_eq!(Some(&service.namespace), c.namespace.metadata.name.as_ref());
    let port = service.port.unwrap_or(443);
    assert_eq!(service_port(&c.service, "admission").port, port);

    // Opted-out pods and the operator's namespace (labelled, for servers before 1.21).
    let opt_out =
        |selector: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
            let labels = BTreeMap::from([(INJECT_LABEL.to_string(), "false".to_string())]);
            selector::matches(selector.as_ref().unwrap(), &labels).unwrap()
        };
    assert!(!opt_out(&hook.object_selector));
    assert!(!opt_out(&hook.namespace_selector));
    let ns_labels = c.namespace.metadata.labels.clone().unwrap();
    assert!(!selector::matches(hook.namespace_selector.as_ref().unwrap(), &ns_labels).unwrap());
    assert!(
        selector::matches(hook.namespace_selector.as_ref().unwrap(), &BTreeMap::new()).unwrap()
    );
}

#[test]
fn deployment_flags_agree_with_service_rbac_and_webhook() {
    let c = config();
    let flags = flags(&c.deployment);
    let pod = c
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    let container = &pod.containers[0];
    let port = |name: &str| {
        container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap()
            .container_port
    };
    assert!(flag(&flags, "--admission-addr").ends_with(&format!(":{}", port("admission"))));
    assert!(flag(&flags, "--report-addr").ends_with(&format!(":{}", port("reports"))));
    assert_ne!(port("admission"), port("reports"));
    assert!(flag(&flags, "--metrics-addr").ends_with(&format!(":{}", port("metrics"))));
    assert_eq!(flag(&flags, "--namespace"), "$(POD_NAMESPACE)");
    assert_eq!(
        Some(&flag(&flags, "--webhook-configuration")),
        c.webhook.metadata.name.as_ref()
    );

    // The report URL and the certificate's names both name the Service; the URL's port
    // leads to the report endpoint's port, not the webhook's.
    let svc = format!(
        "{}.{}.svc",
        c.service.metadata.name.as_deref().unwrap(),
        c.namespace.metadata.name.as_deref().unwrap()
    );
    assert_eq!(
        flag(&flags, "--report-url"),
        format!(
            "https://{svc}:{}{REPORT_PATH}",
            service_port(&c.service, "reports").port
        )
    );
    assert!(flags["--tls-dns-name"].contains(&svc));

    // RBAC names exactly the objects the flags name.
    let role_rules = c.role.rules.as_deref().unwrap();
    assert_eq!(
        names_for(role_rules, "secrets", "update"),
        Some(&Some(vec![flag(&flags, "--tls-secret")]))
    );
    assert_eq!(
        names_for(role_rules, "leases", "update"),
        Some(&Some(vec![flag(&flags, "--leader-election-lease")]))
    );
    let cluster_rules = c.cluster_role.rules.as_deref().unwrap();
    assert_eq!(
        names_for(cluster_rules, "mutatingwebhookconfigurations", "patch"),
        Some(&Some(vec![flag(&flags, "--webhook-configuration")]))
    );
    assert!(
        names_for(cluster_rules, "secrets", "get").is_none(),
        "secrets only through the Role"
    );

    // Both bindings give their role to the Deployment's service account.
    let account = c.account.metadata.name.clone();
    assert_eq!(pod.service_account_name, account);
    for subjects in [&c.binding.subjects, &c.cluster_binding.subjects] {
        let subject = &subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), Some(&subject.name)),
            ("ServiceAccount", account.as_ref())
        );
    }
    assert_eq!(
        c.binding.role_ref.name,
        c.role.metadata.name.clone().unwrap()
    );
    assert_eq!(
        c.cluster_binding.role_ref.name,
        c.cluster_role.metadata.name.clone().unwrap()
    );

    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
}

/// The network policy admits each port of the operator from where its callers are: the
/// report port from pods only, the webhook and metrics ports from anywhere (the API server and
/// the kubelet are no pods), and every port the operator serves is named.
#[test]
fn network_policy_admits_reports_from_pods_only() {
    let c = config();
    let spec = c.network_policy.spec.as_ref().unwrap();
    let pod_labels = c
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert!(selector::matches(spec.pod_selector.as_ref().unwrap(), &pod_labels).unwrap());
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    let container_ports: Vec<String> = operator_container(&c.deployment)
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    let mut covered = Vec::new();
    for rule in spec.ingress.iter().flatten() {
        let ports = rule.ports.as_ref().expect("every rule names its port");
        assert_eq!(ports.len(), 1, "one port per rule: {rule:?}");
        let Some(IntOrString::String(port)) = &ports[0].port else {
            panic!("ports by name: {rule:?}")
        };
        let from = rule.from.as_deref();
        match port.as_str() {
            "reports" => {
                let from = from.expect("reports only from pods");
                assert_eq!(from.len(), 1);
                assert!(from[0].ip_block.is_none(), "{from:?}");
                assert!(from[0].namespace_selector.is_some(), "{from:?}");
            }
            "admission" | "metrics" => assert!(from.is_none(), "{port}: {from:?}"),
            other => panic!("a rule for an unknown port {other}"),
        }
        covered.push(port.clone());
    }
    covered.sort();
    let mut served = container_ports;
    served.sort();
    assert_eq!(covered, served, "every served port has its rule");
}

/// Every sample's watch comes first in its file (pods created before their watch get no agent),
/// selects the pods of its workload, and every object parses strictly.
#[test]
fn samples_put_the_watch_first_and_select_their_workloads() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    for (file, workloads) in [
        ("config/samples/nginx.yaml", 1),
        ("config/samples/jobset-training.yaml", 2),
        ("config/samples/flux-brokers.yaml", 1),
    ] {
        let docs = documents(file);
        assert_eq!(
            docs[0]["kind"], "ProcessWatch",
            "{file}: the watch must come first"
        );
        let watch: ProcessWatch = serde_json::from_value(docs[0].clone()).unwrap();
        let mut selected = 0;
        for doc in &docs[1..] {
            let labels = match doc["kind"].as_str() {
                Some("Deployment") => strict::<Deployment>(doc).spec.unwrap().template.metadata,
                Some("Job") => strict::<Job>(doc).spec.unwrap().template.metadata,
                Some("Pod") => Some(strict::<Pod>(doc).metadata),
                other => panic!("{file}: unexpected {other:?}"),
            }
            .and_then(|m| m.labels)
            .unwrap_or_default();
            assert!(
                selector::matches(&watch.spec.selector, &labels).unwrap(),
                "{file}: the watch does not select {}",
                doc["metadata"]["name"]
            );
            selected += 1;
        }
        assert_eq!(selected, workloads, "{file}");
        if file.ends_with("nginx.yaml") {
            assert_eq!(watch.spec.collect.files, ["/etc/nginx/nginx.conf"]);
        }
    }
}

/// The samples on the local test cluster: local images, never pulled, host network.
#[test]
fn loopback_samples_overlay_renders_with_every_kubectl() {
    for (kubectl, docs) in render("config/overlays/loopback-samples") {
        let mut pod_specs = 0;
        for doc in &docs {
            let spec = match doc["kind"].as_str() {
                Some("Deployment" | "Job") => &doc["spec"]["template"]["spec"],
                Some("Pod") => &doc["spec"],
                _ => continue,
            };
            pod_specs += 1;
            assert_eq!(spec["hostNetwork"], true, "{}: {doc}", kubectl.display());
            for container in spec["containers"].as_array().unwrap() {
                assert!(
                    container["image"]
                        .as_str()
                        .is_some_and(|i| i.starts_with("localhost/")),
                    "{}: {container}",
                    kubectl.display()
                );
                assert_eq!(container["imagePullPolicy"], "Never");
            }
        }
        assert_eq!(pod_specs, 4, "{}: web, two Jobs, flux", kubectl.display());
        let watches = docs.iter().filter(|d| d["kind"] == "ProcessWatch").count();
        assert_eq!(watches, 3, "{}", kubectl.display());
    }
}

/// The kubectl binaries to render with: `kubectl` from PATH and, where `tests/cluster/build`
/// has run, the test cluster's v1.20.2 kubectl, whose embedded kustomize v2.0 knows far less
/// (no `patches`, no directories under `resources`) and is what `kubectl apply -k` uses there.
fn kubectls() -> Vec<PathBuf> {
    let cache = std::env::var_os("PROCWATCH_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/procwatch"));
    let old = cache.join("k8s-1.20.2/bin/kubectl");
    let mut all = vec![PathBuf::from("kubectl")];
    if old.is_file() {
        all.push(old);
    }
    all
}

/// The kinds of the objects `kubectl kustomize dir` renders, for every kubectl runnable here
/// (the project's machines have at least one); elsewhere says so and checks nothing more.
fn render(dir: &str) -> Vec<(PathBuf, Vec<Value>)> {
    kubectls()
        .into_iter()
        .filter_map(|kubectl| render_with(&kubectl, dir).map(|docs| (kubectl, docs)))
        .collect()
}

/// What `kubectl kustomize dir` renders, or None (and the skip recorded) when `kubectl` does
/// not run here.
fn render_with(kubectl: &Path, dir: &str) -> Option<Vec<Value>> {
    let output = match Command::new(kubectl)
        .args(["kustomize", dir])
        .current_dir(repo())
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            skip::skip(&format!(
                "{} not runnable ({error}); kustomize rendering not checked with it",
                kubectl.display()
            ));
            return None;
        }
    };
    assert!(
        output.status.success(),
        "{} kustomize {dir}: {}",
        kubectl.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout).unwrap();
    Some(
        serde_yaml::Deserializer::from_str(&rendered)
            .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
            .filter(|v| !v.is_null())
            .collect(),
    )
}

const ALL_KINDS: [&str; 11] = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "MutatingWebhookConfiguration",
    "NetworkPolicy",
];

#[test]
fn default_overlay_renders() {
    for (kubectl, docs) in render("config/default") {
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for kind in ALL_KINDS {
            assert!(
                kinds.contains(&kind),
                "{}: {kind} missing from {kinds:?}",
                kubectl.display()
            );
        }
    }
}

/// The release overlay names the image once: the operator runs it and injects it as the agent.
/// It needs kustomize 4.1+ (`replacements`), so only the kubectl on PATH renders it, not the
/// test cluster's v1.20.2 one.
#[test]
fn release_overlay_sets_one_image_for_operator_and_agent() {
    let Some(docs) = render_with(Path::new("kubectl"), "config/overlays/release") else {
        return;
    };
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/procwatch:v0.1.0");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--agent-image=registry.example/procwatch:v0.1.0"),
        "{args:?}"
    );
    for kind in ALL_KINDS {
        assert!(docs.iter().any(|d| d["kind"] == kind), "no {kind}");
    }
}

#[test]
fn loopback_overlay_renders_with_every_kubectl() {
    for (kubectl, docs) in render("config/overlays/loopback") {
        let find = |kind: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind)
                .unwrap_or_else(|| panic!("{}: no {kind}", kubectl.display()))
        };
        for kind in ALL_KINDS {
            find(kind);
        }
        let container = &find("Deployment")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["image"],
            "localhost/procwatch:dev",
            "{}",
            kubectl.display()
        );
        assert_eq!(container["imagePullPolicy"], "Never");
        assert!(
            find("Service")["spec"].get("selector").is_none(),
            "{}: the loopback Service selects no pod (no endpoints of 127.0.0.1)",
            kubectl.display()
        );
        let client = &find("MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"];
        assert!(client.get("service").is_none(), "{client}");
        assert_eq!(
            client["url"],
            format!("https://127.0.0.1:9443{MUTATE_PATH}"),
            "{}",
            kubectl.display()
        );
    }
}

/// The loopback overlay replaces the whole argument list (a strategic merge patch cannot edit
/// one entry of it), so it must carry every flag of the base, and serve what it points at.
#[test]
fn loopback_overlay_keeps_every_flag_and_points_at_loopback() {
    let base = flags(&config().deployment);
    let patch: Value = documents("config/overlays/loopback/deployment.yaml").remove(0);
    let args = &patch["spec"]["template"]["spec"]["containers"][0]["args"];
    let overlay_deployment: Deployment = serde_json::from_value(serde_json::json!({
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "operator", "args": args}]}}}
    }))
    .unwrap();
    let overlay = flags(&overlay_deployment);
    for name in base.keys() {
        assert!(
            overlay.contains_key(name),
            "{name} missing from the loopback overlay"
        );
    }
    let port = |name: &str| flag(&overlay, name).rsplit_once(':').unwrap().1.to_string();
    assert_eq!(flag(&overlay, "--tls-ip"), "127.0.0.1");
    assert_ne!(port("--admission-addr"), port("--report-addr"));
    assert_eq!(
        flag(&overlay, "--report-url"),
        format!("https://127.0.0.1:{}{REPORT_PATH}", port("--report-addr"))
    );
    let webhook_patch =
        std::fs::read_to_string(repo().join("config/overlays/loopback/webhook_url.yaml")).unwrap();
    assert!(webhook_patch.contains(&format!(
        "value: https://127.0.0.1:{}{MUTATE_PATH}",
        port("--admission-addr")
    )));
}

/// One right the operator's code uses: the API call, found in `file` as `call`.
struct Use {
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    file: &'static str,
    call: &'static str,
}

const fn used(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    file: &'static str,
    call: &'static str,
) -> Use {
    Use {
        group,
        resource,
        verb,
        file,
        call,
    }
}

/// Every right the code exercises, and where. A watcher lists then watches.
const USES: &[Use] = &[
    used(
        "procwatch.dev",
        "processwatches",
        "list",
        "operator/src/startup/caches.rs",
        "watcher(\n        Api::<ProcessWatch>::all",
    ),
    used(
        "procwatch.dev",
        "processwatches",
        "watch",
        "operator/src/startup/caches.rs",
        "watcher(\n        Api::<ProcessWatch>::all",
    ),
    used(
        "procwatch.dev",
        "processwatches/status",
        "patch",
        "operator/src/controller/mod.rs",
        ".patch_status(",
    ),
    used(
        "",
        "pods",
        "list",
        "operator/src/startup/caches.rs",
        "watcher(\n        Api::<Pod>::all",
    ),
    used(
        "",
        "pods",
        "watch",
        "operator/src/startup/caches.rs",
        "watcher(\n        Api::<Pod>::all",
    ),
    used(
        "",
        "namespaces",
        "list",
        "operator/src/startup/caches.rs",
        "watcher(\n        Api::<PartialObjectMeta<Namespace>>::all",
    ),
    used(
        "",
        "namespaces",
        "watch",
        "operator/src/startup/caches.rs",
        "watcher(\n        Api::<PartialObjectMeta<Namespace>>::all",
    ),
    used(
        "",
        "pods/eviction",
        "create",
        "operator/src/eviction.rs",
        "pods.evict(",
    ),
    // kube's Recorder creates an event, then patches it as the series grows.
    used(
        "events.k8s.io",
        "events",
        "create",
        "operator/src/controller/mod.rs",
        ".publish(",
    ),
    used(
        "events.k8s.io",
        "events",
        "patch",
        "operator/src/controller/mod.rs",
        ".publish(",
    ),
    used(
        "authentication.k8s.io",
        "tokenreviews",
        "create",
        "operator/src/report/auth.rs",
        ".create(&PostParams::default(), &review)",
    ),
    used(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "get",
        "operator/src/tls.rs",
        "api.get(webhook_configuration)",
    ),
    used(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "patch",
        "operator/src/tls.rs",
        ".patch(webhook_configuration",
    ),
    used(
        "",
        "secrets",
        "create",
        "operator/src/tls.rs",
        "secrets.create(",
    ),
    used(
        "",
        "secrets",
        "get",
        "operator/src/tls.rs",
        "secrets.get_opt(",
    ),
    used(
        "",
        "secrets",
        "update",
        "operator/src/tls.rs",
        "secrets.replace(",
    ),
    used(
        "coordination.k8s.io",
        "leases",
        "create",
        "operator/src/leader.rs",
        ".create(&PostParams::default(), &lease)",
    ),
    used(
        "coordination.k8s.io",
        "leases",
        "get",
        "operator/src/leader.rs",
        "leases.get_opt(",
    ),
    used(
        "coordination.k8s.io",
        "leases",
        "update",
        "operator/src/leader.rs",
        ".replace(&settings.name",
    ),
];

/// Least privilege: every verb the ClusterRole and the Role grant is one the code calls.
/// A right nothing uses (once: ephemeral containers, which would run any image in any pod)
/// fails here until it is removed.
#[test]
fn every_granted_right_is_used_by_code() {
    let c = config();
    let rules = c
        .cluster_role
        .rules
        .iter()
        .flatten()
        .chain(c.role.rules.iter().flatten());
    let mut unused = Vec::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    let found = USES.iter().find(|u| {
                        (u.group, u.resource, u.verb) == (group, resource, verb.as_str())
                    });
                    match found {
                        Some(u) => {
                            let source = std::fs::read_to_string(repo().join(u.file)).unwrap();
                            assert!(
                                source.contains(u.call),
                                "{group}/{resource} {verb}: {} no longer calls {:?}",
                                u.file,
                                u.call
                            );
                        }
                        None => unused.push(format!("{group}/{resource} {verb}")),
                    }
                }
            }
        }
    }
    assert_eq!(unused, Vec::<String>::new(), "granted but used by no code");
    let ephemeral = names_for(
        c.cluster_role.rules.as_deref().unwrap(),
        "pods/ephemeralcontainers",
        "patch",
    );
    assert!(
        ephemeral.is_none(),
        "no right to add containers to running pods"
    );
}
