//! The agent container and its token volume, as the webhook adds them to a pod.
//!
//! Least privilege, and why each setting is what it is:
//! - No capability by default and uid 65534 (nobody), gid 0: the agent reads `/proc/<pid>/stat`,
//!   `status` and `cmdline` of every process, which any user may; `environ`, `fd`, `maps` and
//!   `root` of a process need ptrace access, which the kernel grants to the same uid and gid or
//!   to CAP_SYS_PTRACE. What the agent cannot read it reports per field.
//! - The token file is readable by its owner and group only ([`TOKEN_FILE_MODE`]); the agent
//!   reads it as root (ptrace) or through its group 0 (the default agent).
//! - With `agent.ptrace: true` the agent gets CAP_SYS_PTRACE and runs as uid 0. Kubernetes
//!   runtimes do not raise ambient capabilities, so a capability added to a non-root container
//!   stays in the bounding set and never becomes effective; only uid 0 makes it usable. Every
//!   other capability is still dropped, so this root cannot override file permissions
//!   (no CAP_DAC_OVERRIDE), change owners or bind privileged ports.
//! - Always: no privilege escalation (setuid binaries cannot regain what was dropped), a
//!   read-only root filesystem (the agent writes nothing), the runtime's default seccomp
//!   profile (a field every server since 1.19 accepts).
//!
//! So the default agent meets the Pod Security Standards' `restricted` profile. With ptrace it
//! needs a namespace at `privileged`: `baseline` forbids adding SYS_PTRACE, and Pod Security
//! admission would refuse the pod; there the agent is injected without ptrace instead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use procwatch_crds::ProcessWatch;
use procwatch_crds::constants::{
    AGENT_CONTAINER_NAME, TOKEN_AUDIENCE, TOKEN_FILE, TOKEN_MOUNT_PATH, env,
};

use super::InjectionSettings;
use super::quantity;
use crate::report::response::collect_request;

/// The agent binary, named explicitly so any image with it on `PATH` works, whatever its
/// entrypoint (the project's test image holds the operator and the agent together).
pub const AGENT_COMMAND: &str = "procwatch-agent";
/// Name of the projected token volume; mounted only into the agent.
pub const TOKEN_VOLUME_NAME: &str = "procwatch-token";
/// Where the API server's ServiceAccount admission mounts the pod's API token.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// uid the agent runs as when it needs no capability.
pub const NOBODY: i64 = 65534;
/// The agent's gid, with or without ptrace: the group of the token file (see [`TOKEN_FILE_MODE`]).
pub const AGENT_GROUP: i64 = 0;
/// Mode of the token file: read for owner and group, nothing for others.
///
/// The kubelet writes projected files as root:root, with this mode. It gives the file to a
/// user (mode 0600) only when every container of the pod runs as that one uid, and that uid
/// would be the workload's. 0400 would therefore shut out the default agent (uid 65534); the
/// group bit lets it in through its gid 0, which a pod-wide `fsGroup` could do only by changing
/// the workload's own files. A workload process cannot reach the file anyway (it lives in the
/// agent's mount namespace, and the non-dumpable agent's `/proc/<pid>/root` refuses it); the
/// mode is the second wall: whoever reaches it still needs uid 0 or gid 0, and a workload
/// running as nobody (65534:65534) has neither.
pub const TOKEN_FILE_MODE: i32 = 0o440;
/// The API server refuses projected tokens that expire sooner than this.
pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 600;

const DEFAULT_REQUESTS: [(&str, &str); 2] = [("cpu", "10m"), ("memory", "16Mi")];
const DEFAULT_LIMITS: [(&str, &str); 2] = [("cpu", "100m"), ("memory", "32Mi")];

/// The agent container for a pod selected by `watches` (at least one). It gets ptrace when a
/// watch asks for it and the namespace's Pod Security level allows it.
pub fn agent_container(
    settings: &InjectionSettings,
    ca_pem: &str,
    watches: &[&ProcessWatch],
    ptrace_allowed: bool,
) -> Container {
    let ptrace = ptrace_allowed && watches.iter().any(|w| w.spec.agent.ptrace);
    Container {
        name: AGENT_CONTAINER_NAME.to_string(),
        image: Some(settings.agent_image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        command: Some(vec![AGENT_COMMAND.to_string()]),
        args: Some(vec!["run".to_string()]),
        env: Some(agent_env(settings, ca_pem, watches)),
        resources: Some(agent_resources(watches)),
        security_context: Some(security_context(ptrace)),
        // Also at the service-account path: the API server's ServiceAccount admission then
        // finds it taken and does not mount the pod's API token into the agent (its own token's
        // audience makes it worthless to the API server), and changes nothing that would call
        // this webhook again.
        volume_mounts: Some(
            [TOKEN_MOUNT_PATH, SERVICE_ACCOUNT_MOUNT_PATH]
                .map(|path| VolumeMount {
                    name: TOKEN_VOLUME_NAME.to_string(),
                    mount_path: path.to_string(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                })
                .to_vec(),
        ),
        // Its last log lines explain a crash in `kubectl describe pod`.
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Container::default()
    }
}

/// The projected service-account token the agent authenticates with. It is independent of
/// `automountServiceAccountToken`, and its audience makes it worthless to the API server.
pub fn token_volume(settings: &InjectionSettings) -> Volume {
    Volume {
        name: TOKEN_VOLUME_NAME.to_string(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.to_string()),
                    expiration_seconds: Some(settings.token_expiration_seconds),
                    path: token_file_name().to_string(),
                }),
                ..VolumeProjection::default()
            }]),
            default_mode: Some(TOKEN_FILE_MODE),
        }),
        ..Volume::default()
    }
}

/// Whether `volume` is the token volume this webhook adds (so a pod that has it keeps it).
pub fn is_token_volume(volume: &Volume) -> bool {
    let token_sources = volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|s| s.service_account_token.as_ref());
    volume.name == TOKEN_VOLUME_NAME
        && token_sources
            .into_iter()
            .any(|t| t.audience.as_deref() == Some(TOKEN_AUDIENCE) && t.path == token_file_name())
}

/// The token's file name inside the mount, derived from the shared constants so the agent's
/// `PROCWATCH_TOKEN_FILE` and the projection cannot disagree.
fn token_file_name() -> &'static str {
    TOKEN_FILE
        .strip_prefix(TOKEN_MOUNT_PATH)
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or("token")
}

fn agent_env(settings: &InjectionSettings, ca_pem: &str, watches: &[&ProcessWatch]) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let value = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        ..EnvVar::default()
    };
    // One agent serves every watch of the pod, so it samples as often as the most eager one.
    let interval = watches
        .iter()
        .map(|w| w.spec.interval)
        .min()
        .unwrap_or_default();
    vec![
        field(env::POD_NAME, "metadata.name"),
        field(env::POD_NAMESPACE, "metadata.namespace"),
        field(env::POD_UID, "metadata.uid"),
        value(env::REPORT_URL, settings.report_url.clone()),
        value(env::CA_PEM, ca_pem.to_string()),
        value(env::TOKEN_FILE, TOKEN_FILE.to_string()),
        value(env::INTERVAL, interval.to_string()),
        // What the operator's answer would say, so that the first report is already complete.
        value(env::COLLECT, collect_json(watches)),
    ]
}

fn collect_json(watches: &[&ProcessWatch]) -> String {
    // Plain strings, booleans and numbers: serialising cannot fail.
    serde_json::to_string(&collect_request(watches)).expect("a CollectRequest serialises")
}

/// The largest request and the largest limit of every resource any watch names; the small
/// defaults when no watch sets resources. A limit is raised to its request where merging
/// would otherwise leave it below (the API server refuses such a container). A quantity that
/// does not parse is left out, with a warning: the API server would refuse the whole pod.
fn agent_resources(watches: &[&ProcessWatch]) -> ResourceRequirements {
    let asked: Vec<&ResourceRequirements> = watches
        .iter()
        .filter_map(|w| w.spec.agent.resources.as_ref())
        .collect();
    if asked.is_empty() {
        let quantities = |pairs: [(&str, &str); 2]| {
            pairs
                .iter()
                .map(|(name, q)| (name.to_string(), Quantity(q.to_string())))
                .collect()
        };
        return ResourceRequirements {
            requests: Some(quantities(DEFAULT_REQUESTS)),
            limits: Some(quantities(DEFAULT_LIMITS)),
            ..ResourceRequirements::default()
        };
    }
    let requests = largest(asked.iter().filter_map(|r| r.requests.as_ref()));
    let mut limits = largest(asked.iter().filter_map(|r| r.limits.as_ref()));
    for (name, (request_value, request)) in &requests {
        if let Some((limit_value, limit)) = limits.get_mut(name)
            && *limit_value < *request_value
        {
            *limit_value = *request_value;
            *limit = request.clone();
        }
    }
    let strip = |map: BTreeMap<String, (f64, Quantity)>| {
        (!map.is_empty()).then(|| map.into_iter().map(|(k, (_, q))| (k, q)).collect())
    };
    ResourceRequirements {
        requests: strip(requests),
        limits: strip(limits),
        ..ResourceRequirements::default()
    }
}

fn largest<'a>(
    maps: impl Iterator<Item = &'a BTreeMap<String, Quantity>>,
) -> BTreeMap<String, (f64, Quantity)> {
    let mut out: BTreeMap<String, (f64, Quantity)> = BTreeMap::new();
    for (name, quantity) in maps.flatten() {
        let value = match quantity::value(&quantity.0) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(resource = %name, %error, "agent resource left out");
                continue;
            }
        };
        let bigger = out.get(name).is_none_or(|(known, _)| value > *known);
        if bigger {
            out.insert(name.clone(), (value, quantity.clone()));
        }
    }
    out
}

fn security_context(ptrace: bool) -> SecurityContext {
    let (user, non_root, add) = if ptrace {
        (0, false, Some(vec!["SYS_PTRACE".to_string()]))
    } else {
        (NOBODY, true, None)
    };
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        run_as_non_root: Some(non_root),
        run_as_user: Some(user),
        run_as_group: Some(AGENT_GROUP),
        capabilities: Some(Capabilities {
            add,
            drop: Some(vec!["ALL".to_string()]),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::test_support::{FAKE_CA_PEM, settings, watch};
    use procwatch_crds::EnvironmentPolicy;
    use procwatch_crds::report::CollectRequest;

    fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
        container.env.iter().flatten().find(|e| e.name == name)
    }

    #[test]
    fn token_file_is_inside_the_mount() {
        assert_eq!(
            format!("{TOKEN_MOUNT_PATH}/{}", token_file_name()),
            TOKEN_FILE
        );
        assert!(is_token_volume(&token_volume(&settings(false))));
    }

    #[test]
    fn token_file_is_closed_to_others_and_open_to_both_agents() {
        let volume = token_volume(&settings(false));
        let mode = volume.projected.and_then(|p| p.default_mode).unwrap();
        assert_eq!(mode & 0o007, 0, "others get nothing: {mode:o}");
        assert_eq!(mode & 0o222, 0, "nobody writes: {mode:o}");
        // The kubelet writes it as root:root: the ptrace agent (uid 0) reads it as its owner,
        // the default agent through its group.
        assert_ne!(mode & 0o400, 0);
        assert_ne!(mode & 0o040, 0);
        let plain = watch("a", &[("app", "x")]);
        let mut tracing = watch("b", &[("app", "x")]);
        tracing.spec.agent.ptrace = true;
        for (watches, user) in [(vec![&plain], NOBODY), (vec![&plain, &tracing], 0)] {
            let sc = agent_container(&settings(false), FAKE_CA_PEM, &watches, true)
                .security_context
                .unwrap();
            assert_eq!((sc.run_as_user, sc.run_as_group), (Some(user), Some(0)));
        }
    }

    #[test]
    fn environment_has_downward_api_and_operator_coordinates() {
        let w = watch("a", &[("app", "x")]);
        let c = agent_container(&settings(false), FAKE_CA_PEM, &[&w], true);
        for (name, path) in [
            (env::POD_NAME, "metadata.name"),
            (env::POD_NAMESPACE, "metadata.namespace"),
            (env::POD_UID, "metadata.uid"),
        ] {
            let var = env_value(&c, name).unwrap();
            let field = var.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
            assert_eq!(field.field_path, path);
        }
        let plain = |name| env_value(&c, name).unwrap().value.clone().unwrap();
        assert_eq!(plain(env::REPORT_URL), "https://127.0.0.1:9444/report/v1");
        assert!(plain(env::CA_PEM).starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(plain(env::TOKEN_FILE), TOKEN_FILE);
        assert_eq!(plain(env::INTERVAL), "15s");
        let collect: CollectRequest = serde_json::from_str(&plain(env::COLLECT)).unwrap();
        assert_eq!(collect, collect_request(&[&w]));
        assert_eq!(c.command, Some(vec![AGENT_COMMAND.to_string()]));
        assert_eq!(c.args, Some(vec!["run".to_string()]));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn least_privilege_without_ptrace() {
        let w = watch("a", &[("app", "x")]);
        let sc = agent_container(&settings(false), FAKE_CA_PEM, &[&w], true)
            .security_context
            .unwrap();
        assert_eq!(sc.run_as_user, Some(NOBODY));
        assert_eq!(sc.run_as_group, Some(AGENT_GROUP));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(caps.add, None);
    }

    #[test]
    fn ptrace_adds_only_sys_ptrace_and_root() {
        let plain = watch("a", &[("app", "x")]);
        let mut tracing = watch("b", &[("app", "x")]);
        tracing.spec.agent.ptrace = true;
        let sc = agent_container(&settings(false), FAKE_CA_PEM, &[&plain, &tracing], true)
            .security_context
            .unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!(sc.run_as_non_root, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add, Some(vec!["SYS_PTRACE".to_string()]));
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    }

    /// The rules of the Pod Security Standards (`baseline`, then `restricted`) that concern
    /// a container and its volume, each named as the standard names it; the broken ones.
    fn restricted_violations(c: &Container, volume: &Volume) -> Vec<&'static str> {
        let sc = c.security_context.clone().unwrap_or_default();
        let caps = sc.capabilities.clone().unwrap_or_default();
        let seccomp = sc.seccomp_profile.as_ref().map(|p| p.type_.as_str());
        let rules = [
            (
                "baseline: HostProcess",
                sc.windows_options
                    .as_ref()
                    .and_then(|w| w.host_process)
                    .is_none_or(|h| !h),
            ),
            (
                "baseline: Privileged Containers",
                sc.privileged != Some(true),
            ),
            (
                "baseline: Host Ports",
                c.ports
                    .iter()
                    .flatten()
                    .all(|p| p.host_port.is_none_or(|h| h == 0)),
            ),
            (
                "baseline: SELinux",
                sc.se_linux_options
                    .as_ref()
                    .is_none_or(|o| o.user.is_none() && o.role.is_none()),
            ),
            (
                "baseline: /proc Mount Type",
                sc.proc_mount.as_deref().is_none_or(|m| m == "Default"),
            ),
            ("baseline: AppArmor", sc.app_armor_profile.is_none()),
            (
                "restricted: Volume Types",
                volume.projected.is_some() && volume.host_path.is_none(),
            ),
            (
                "restricted: Privilege Escalation",
                sc.allow_privilege_escalation == Some(false),
            ),
            (
                "restricted: Running as Non-root",
                sc.run_as_non_root == Some(true),
            ),
            (
                "restricted: Running as Non-root user",
                sc.run_as_user.is_some_and(|u| u != 0),
            ),
            (
                "restricted: Seccomp",
                matches!(seccomp, Some("RuntimeDefault" | "Localhost")),
            ),
            (
                "restricted: Capabilities (drop ALL)",
                caps.drop.iter().flatten().any(|d| d == "ALL"),
            ),
            (
                "restricted: Capabilities (add only NET_BIND_SERVICE)",
                caps.add.iter().flatten().all(|a| a == "NET_BIND_SERVICE"),
            ),
        ];
        rules
            .into_iter()
            .filter(|(_, kept)| !kept)
            .map(|(rule, _)| rule)
            .collect()
    }

    #[test]
    fn the_default_agent_meets_the_restricted_profile_rule_by_rule() {
        let w = watch("a", &[("app", "x")]);
        let agent = agent_container(&settings(false), FAKE_CA_PEM, &[&w], true);
        let volume = token_volume(&settings(false));
        assert_eq!(restricted_violations(&agent, &volume), Vec::<&str>::new());
    }

    #[test]
    fn where_pod_security_forbids_ptrace_the_agent_goes_without_it() {
        let mut tracing = watch("b", &[("app", "x")]);
        tracing.spec.agent.ptrace = true;
        let volume = token_volume(&settings(false));
        let allowed = agent_container(&settings(false), FAKE_CA_PEM, &[&tracing], true);
        assert!(
            restricted_violations(&allowed, &volume)
                .contains(&"restricted: Capabilities (add only NET_BIND_SERVICE)")
        );
        let forbidden = agent_container(&settings(false), FAKE_CA_PEM, &[&tracing], false);
        assert_eq!(
            restricted_violations(&forbidden, &volume),
            Vec::<&str>::new()
        );
    }

    fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
        let map = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        ResourceRequirements {
            requests: map(requests),
            limits: map(limits),
            ..ResourceRequirements::default()
        }
    }

    #[test]
    fn default_resources_when_no_watch_asks() {
        let w = watch("a", &[]);
        let r = agent_container(&settings(false), FAKE_CA_PEM, &[&w], true)
            .resources
            .unwrap();
        assert_eq!(
            r,
            resources(
                &[("cpu", "10m"), ("memory", "16Mi")],
                &[("cpu", "100m"), ("memory", "32Mi")]
            )
        );
    }

    #[test]
    fn resources_are_the_largest_asked_and_limits_cover_requests() {
        let mut a = watch("a", &[]);
        a.spec.agent.resources = Some(resources(
            &[("cpu", "50m"), ("memory", "64Mi")],
            &[("cpu", "0.2"), ("memory", "128Mi")],
        ));
        let mut b = watch("b", &[]);
        b.spec.agent.resources = Some(resources(&[("cpu", "300m")], &[("memory", "100M")]));
        let c = watch("c", &[]);
        let r = agent_container(&settings(false), FAKE_CA_PEM, &[&a, &b, &c], true)
            .resources
            .unwrap();
        // cpu: request 300m beats 50m, so the 0.2 limit is raised to 300m.
        assert_eq!(
            r,
            resources(
                &[("cpu", "300m"), ("memory", "64Mi")],
                &[("cpu", "300m"), ("memory", "128Mi")]
            )
        );
    }

    #[test]
    fn misspelt_quantity_is_left_out() {
        let mut a = watch("a", &[]);
        a.spec.agent.resources = Some(resources(&[("cpu", "lots"), ("memory", "20Mi")], &[]));
        let r = agent_container(&settings(false), FAKE_CA_PEM, &[&a], true)
            .resources
            .unwrap();
        assert_eq!(r, resources(&[("memory", "20Mi")], &[]));
    }

    #[test]
    fn interval_is_the_smallest_of_the_watches() {
        let mut a = watch("a", &[]);
        a.spec.interval = "1m".parse().unwrap();
        let mut b = watch("b", &[]);
        b.spec.interval = "5s".parse().unwrap();
        let c = agent_container(&settings(false), FAKE_CA_PEM, &[&a, &b], true);
        assert_eq!(
            env_value(&c, env::INTERVAL).unwrap().value.as_deref(),
            Some("5s")
        );
    }

    /// The agent's first scan collects what the operator's first answer would ask for: the
    /// union of every selecting watch.
    #[test]
    fn collect_options_are_the_union_of_the_watches() {
        let mut names = watch("a", &[]);
        names.spec.collect.files = vec!["/etc/b".into()];
        let mut redacted = watch("b", &[]);
        redacted.spec.collect.environment = EnvironmentPolicy::Redacted;
        redacted.spec.collect.libraries = true;
        redacted.spec.collect.files = vec!["/etc/a".into(), "/etc/b".into()];
        redacted.spec.report.max_processes = 7;
        let c = agent_container(&settings(false), FAKE_CA_PEM, &[&names, &redacted], true);
        let collect = env_value(&c, env::COLLECT)
            .unwrap()
            .value
            .as_deref()
            .unwrap();
        let collect: CollectRequest = serde_json::from_str(collect).unwrap();
        assert_eq!(collect.environment, EnvironmentPolicy::Redacted);
        assert!(collect.libraries);
        assert_eq!(collect.files, ["/etc/a", "/etc/b"]);
        assert_eq!(
            collect.max_processes,
            names.spec.report.max_processes.max(7)
        );
    }
}
