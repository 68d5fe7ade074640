//! Container attribution, pure: which container each process belongs to.
//!
//! The container ID comes from `/proc/<pid>/cgroup`, whose path names it in every form real
//! nodes produce (systemd and cgroupfs drivers; containerd, CRI-O, docker, podman; cgroup v1
//! and v2; absolute, or relative `/../…` inside a private cgroup namespace). Processes whose
//! cgroup says nothing (the agent's own container seen from inside it is `0::/`) join the
//! container of another process in their mount namespace. The pod's infrastructure process
//! (`pause`, `catatonit`) belongs to no container. Given the pod's container statuses, groups
//! take their container names and the agent's own container is left out.

use std::collections::HashMap;

use procfs_core::{FromBufRead, ProcessCGroups};
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_crds::report::ContainerIdentity;

/// The runtime that created a container, as its cgroup name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
    /// A bare ID under a kubelet cgroupfs path (`/kubepods/…/pod<uid>/<id>`) does not say.
    Unknown,
}

impl Runtime {
    /// The scheme of `status.containerStatuses[].containerID`, and the prefix of host group
    /// names.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "container",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId {
    pub runtime: Runtime,
    /// 64 lowercase hex digits.
    pub id: String,
}

impl ContainerId {
    /// `containerd://<id>` as Kubernetes writes it; the bare ID when the runtime is unknown.
    pub fn uri(&self) -> String {
        match self.runtime {
            Runtime::Unknown => self.id.clone(),
            runtime => format!("{}://{}", runtime.name(), self.id),
        }
    }

    /// The name of the group on a plain host: `containerd-3f2a9c1b7e0d`.
    pub fn short_name(&self) -> String {
        format!("{}-{}", self.runtime.name(), &self.id[..12])
    }
}

/// Per-runtime prefixes of a container's own cgroup directory (`<prefix><id>[.scope]`).
const SCOPE_PREFIXES: [(&str, Runtime); 5] = [
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::CriO),
    ("docker-", Runtime::Docker),
    ("libpod-", Runtime::Podman),
    ("cri-dockerd-", Runtime::Docker),
];

/// Monitor processes that live beside a container on the host, not inside it.
const MONITOR_PREFIXES: [&str; 2] = ["crio-conmon-", "libpod-conmon-"];

/// The container of a process from the text of its `/proc/<pid>/cgroup`: the first line whose
/// path names one (in a hybrid hierarchy only some controllers may). A file that does not parse
/// names none.
pub fn container_from_cgroup(text: &[u8]) -> Option<ContainerId> {
    let cgroups = ProcessCGroups::from_buf_read(String::from_utf8_lossy(text).as_bytes()).ok()?;
    cgroups
        .into_iter()
        .find_map(|cgroup| container_from_cgroup_path(&cgroup.pathname))
}

/// The innermost container named by a cgroup path.
pub fn container_from_cgroup_path(path: &str) -> Option<ContainerId> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(index, component)| container_from_component(component, &components[..index]))
}

fn container_from_component(component: &str, ancestors: &[&str]) -> Option<ContainerId> {
    if MONITOR_PREFIXES
        .iter()
        .any(|prefix| component.starts_with(prefix))
    {
        return None;
    }
    let name = component.strip_suffix(".scope").unwrap_or(component);
    // The systemd-driver form before systemd turns it into a scope: `<slice>:cri-containerd:<id>`.
    if let Some((head, id)) = name.rsplit_once(':') {
        let runtime = match head.rsplit(':').next() {
            Some("cri-containerd") => Runtime::Containerd,
            Some("crio") => Runtime::CriO,
            Some("docker") => Runtime::Docker,
            _ => return None,
        };
        return is_container_id(id).then(|| ContainerId {
            runtime,
            id: id.to_string(),
        });
    }
    for (prefix, runtime) in SCOPE_PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            return is_container_id(id).then(|| ContainerId {
                runtime,
                id: id.to_string(),
            });
        }
    }
    is_container_id(name).then(|| ContainerId {
        runtime: runtime_from_ancestors(ancestors),
        id: name.to_string(),
    })
}

/// A bare ID is named by its parent: `/k8s.io/<id>` (containerd's namespace), `/docker/<id>`,
/// `/libpod_parent/…`; under `/kubepods/…` any CRI runtime could have made it.
fn runtime_from_ancestors(ancestors: &[&str]) -> Runtime {
    ancestors
        .iter()
        .rev()
        .find_map(|ancestor| match *ancestor {
            "k8s.io" => Some(Runtime::Containerd),
            "docker" => Some(Runtime::Docker),
            "libpod_parent" | "machine.slice" => Some(Runtime::Podman),
            // The nearest kubelet cgroup decides: an outer docker (kind) is not the runtime.
            kubelet if kubelet.starts_with("kubepods") => Some(Runtime::Unknown),
            _ => None,
        })
        .unwrap_or(Runtime::Unknown)
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Commands of pod infrastructure processes (the sandbox's PID 1).
const INFRA_COMMANDS: [&str; 2] = ["pause", "catatonit"];

/// Whether a command is that of a pod infrastructure process (`pause`, `catatonit`), which
/// belongs to no container when it is a sandbox's PID 1 or in a container the pod does not name.
pub fn is_infra_command(command: &str) -> bool {
    INFRA_COMMANDS.contains(&command)
}

/// What attribution needs to know about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub pid: i32,
    pub command: String,
    pub container: Option<ContainerId>,
    /// Inode of `/proc/<pid>/ns/mnt`; `None` when the agent may not read it.
    pub mount_namespace: Option<u64>,
}

impl AsRef<ProcessIdentity> for ProcessIdentity {
    fn as_ref(&self) -> &ProcessIdentity {
        self
    }
}

/// A group of processes reported as one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// As the pod's status writes it when known, else as derived from the cgroup.
    pub container_id: Option<String>,
    /// Indexes into the processes given to [`attribute`], in the order given.
    pub members: Vec<usize>,
}

/// Name of the group of processes in no container: the host's own on a plain machine.
pub const HOST_GROUP: &str = "host";
/// Name of that group inside a pod, where it should stay empty.
pub const UNATTRIBUTED_GROUP: &str = "unattributed";

/// Groups processes by container, sorted by name. `pod` is the pod's container statuses
/// (inside a pod: names the groups and leaves out the agent's own container, which holds
/// `agent_pid`); `None` on a plain host. `processes` may be anything that holds an identity,
/// so the scanner need not copy them out.
pub fn attribute<P: AsRef<ProcessIdentity>>(
    processes: &[P],
    pod: Option<&[ContainerIdentity]>,
    agent_pid: Option<i32>,
) -> Vec<Group> {
    let processes = || processes.iter().map(AsRef::as_ref);
    let pod_names: HashMap<&str, &ContainerIdentity> = pod
        .unwrap_or_default()
        .iter()
        .map(|status| {
            let id = status.container_id.rsplit("://").next().unwrap_or_default();
            (id, status)
        })
        .collect();
    let in_pod = |container: &ContainerId| pod_names.contains_key(container.id.as_str());
    let is_infra = |process: &ProcessIdentity, container: Option<&ContainerId>| {
        is_infra_command(&process.command)
            && (process.pid == 1 || container.is_some_and(|c| !in_pod(c)))
    };

    // A mount namespace belongs to the container of any process in it that its cgroup names.
    // A namespace two containers claim (a bind-mounted host namespace?) belongs to neither.
    let mut claims: HashMap<u64, Option<&ContainerId>> = HashMap::new();
    for process in processes() {
        if let (Some(container), Some(namespace)) = (&process.container, process.mount_namespace)
            && !is_infra(process, Some(container))
        {
            claims
                .entry(namespace)
                .and_modify(|owner| {
                    if *owner != Some(container) {
                        *owner = None;
                    }
                })
                .or_insert(Some(container));
        }
    }
    let namespace_owner: HashMap<u64, &ContainerId> = claims
        .into_iter()
        .filter_map(|(namespace, owner)| Some((namespace, owner?)))
        .collect();
    fn container_of<'p>(
        process: &'p ProcessIdentity,
        namespace_owner: &HashMap<u64, &'p ContainerId>,
    ) -> Option<&'p ContainerId> {
        process.container.as_ref().or_else(|| {
            process
                .mount_namespace
                .and_then(|namespace| namespace_owner.get(&namespace).copied())
        })
    }

    let agent = agent_pid.and_then(|pid| processes().find(|p| p.pid == pid));
    let agent_container = agent.and_then(|agent| container_of(agent, &namespace_owner));
    let is_agent_container = |process: &ProcessIdentity, container: Option<&ContainerId>| {
        pod.is_some()
            && agent.is_some_and(|agent| match (container, agent_container) {
                (Some(container), Some(agent_container)) => container == agent_container,
                (None, None) => {
                    process.mount_namespace.is_some()
                        && process.mount_namespace == agent.mount_namespace
                }
                _ => false,
            })
    };

    let mut groups: HashMap<Option<&ContainerId>, Group> = HashMap::new();
    for (index, process) in processes().enumerate() {
        let container = container_of(process, &namespace_owner);
        if is_infra(process, container) || is_agent_container(process, container) {
            continue;
        }
        groups
            .entry(container)
            .or_insert_with(|| match container {
                Some(container) => match pod_names.get(container.id.as_str()) {
                    Some(status) => Group {
                        name: status.name.clone(),
                        container_id: Some(status.container_id.clone()),
                        members: Vec::new(),
                    },
                    None => Group {
                        name: container.short_name(),
                        container_id: Some(container.uri()),
                        members: Vec::new(),
                    },
                },
                None => Group {
                    name: if pod.is_some() {
                        UNATTRIBUTED_GROUP
                    } else {
                        HOST_GROUP
                    }
                    .to_string(),
                    container_id: None,
                    members: Vec::new(),
                },
            })
            .members
            .push(index);
    }
    let mut groups: Vec<Group> = groups
        .into_values()
        .filter(|group| pod.is_none() || group.name != AGENT_CONTAINER_NAME)
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1b7e0d4c5a8b9e1f2d3c4b5a6978675645342312019f8e7d6c5b4a3921";
    const OTHER: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SANDBOX: &str = "5555555555555555555555555555555555555555555555555555555555555555";
    const POD_UID: &str = "0d3b4c5e-1a2b-4c3d-9e8f-7a6b5c4d3e2f";

    fn cid(runtime: Runtime, id: &str) -> Option<ContainerId> {
        Some(ContainerId {
            runtime,
            id: id.to_string(),
        })
    }

    #[test]
    fn every_cgroup_form_real_nodes_produce() {
        let pod_slice = POD_UID.replace('-', "_");
        let cases: Vec<(String, Option<ContainerId>)> = vec![
            // systemd driver, cgroup v2, containerd.
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_slice}.slice/cri-containerd-{ID}.scope\n"
                ),
                cid(Runtime::Containerd, ID),
            ),
            // Same pod seen from inside another container's private cgroup namespace.
            (
                format!("0::/../cri-containerd-{ID}.scope\n"),
                cid(Runtime::Containerd, ID),
            ),
            (
                format!("0::/../../kubepods-burstable-pod{pod_slice}.slice/crio-{ID}.scope\n"),
                cid(Runtime::CriO, ID),
            ),
            // CRI-O with a nested `container` cgroup, and its conmon monitor (not a container).
            (
                format!(
                    "0::/kubepods.slice/kubepods-pod{pod_slice}.slice/crio-{ID}.scope/container\n"
                ),
                cid(Runtime::CriO, ID),
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-pod{pod_slice}.slice/crio-conmon-{ID}.scope\n"
                ),
                None,
            ),
            (
                format!("0::/system.slice/docker-{ID}.scope\n"),
                cid(Runtime::Docker, ID),
            ),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                cid(Runtime::Podman, ID),
            ),
            (
                format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"),
                None,
            ),
            // cgroupfs driver.
            (
                format!("0::/kubepods/besteffort/pod{POD_UID}/{ID}\n"),
                cid(Runtime::Unknown, ID),
            ),
            (
                format!("0::/kubepods/pod{POD_UID}/{ID}\n"),
                cid(Runtime::Unknown, ID),
            ),
            (
                format!("0::/kubepods/burstable/pod{POD_UID}/crio-{ID}\n"),
                cid(Runtime::CriO, ID),
            ),
            (format!("0::/k8s.io/{ID}\n"), cid(Runtime::Containerd, ID)),
            (format!("0::/docker/{ID}\n"), cid(Runtime::Docker, ID)),
            (
                format!("0::/libpod_parent/{OTHER}/libpod-{ID}\n"),
                cid(Runtime::Podman, ID),
            ),
            // A systemd-less systemd-driver path.
            (
                format!("0::/kubepods-besteffort-pod{pod_slice}.slice:cri-containerd:{ID}\n"),
                cid(Runtime::Containerd, ID),
            ),
            // cgroup v1 and hybrid: only one controller may name the container.
            (
                format!(
                    "12:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_slice}.slice/cri-containerd-{ID}.scope\n11:name=systemd:/\n0::/\n"
                ),
                cid(Runtime::Containerd, ID),
            ),
            (
                format!(
                    "9:name=systemd:/\n8:pids:/\n4:memory:/kubepods/besteffort/pod{POD_UID}/{ID}\n0::/\n"
                ),
                cid(Runtime::Unknown, ID),
            ),
            // Docker in docker, kind: the innermost container wins.
            (
                format!("0::/docker/{OTHER}/kubepods/pod{POD_UID}/{ID}\n"),
                cid(Runtime::Unknown, ID),
            ),
            // Nothing to say.
            ("0::/\n".to_string(), None),
            ("0::/init.scope\n".to_string(), None),
            (
                "0::/user.slice/user-1000.slice/session-3.scope\n".to_string(),
                None,
            ),
            (
                "4:memory:/process_api/64210172b0097885a9cba5f51de8679a\n".to_string(),
                None,
            ),
            (format!("0::/kubepods/pod{POD_UID}/{}\n", &ID[..63]), None),
            (
                format!("0::/kubepods/pod{POD_UID}/{}\n", ID.to_uppercase()),
                None,
            ),
            (String::new(), None),
            ("garbage".to_string(), None),
        ];
        for (text, expected) in cases {
            assert_eq!(container_from_cgroup(text.as_bytes()), expected, "{text}");
        }
    }

    #[test]
    fn uris_and_short_names() {
        let containerd = ContainerId {
            runtime: Runtime::Containerd,
            id: ID.into(),
        };
        assert_eq!(containerd.uri(), format!("containerd://{ID}"));
        assert_eq!(containerd.short_name(), "containerd-3f2a9c1b7e0d");
        let crio = ContainerId {
            runtime: Runtime::CriO,
            id: ID.into(),
        };
        assert_eq!(crio.uri(), format!("cri-o://{ID}"));
        let unknown = ContainerId {
            runtime: Runtime::Unknown,
            id: ID.into(),
        };
        assert_eq!(unknown.uri(), ID);
        assert_eq!(unknown.short_name(), "container-3f2a9c1b7e0d");
    }

    fn process(
        pid: i32,
        command: &str,
        container: Option<&str>,
        namespace: Option<u64>,
    ) -> ProcessIdentity {
        ProcessIdentity {
            pid,
            command: command.into(),
            container: container.map(|id| ContainerId {
                runtime: Runtime::Containerd,
                id: id.into(),
            }),
            mount_namespace: namespace,
        }
    }

    fn summary(groups: &[Group], processes: &[ProcessIdentity]) -> Vec<(String, Vec<i32>)> {
        groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.members.iter().map(|&i| processes[i].pid).collect(),
                )
            })
            .collect()
    }

    /// A shared-PID pod on cgroup v2 as the agent sees it: the others' cgroups are relative
    /// paths naming their containers, its own is `/`.
    fn pod_processes() -> Vec<ProcessIdentity> {
        vec![
            process(1, "pause", Some(SANDBOX), Some(10)),
            process(7, "nginx", Some(ID), Some(20)),
            process(8, "nginx", None, Some(20)), // cgroup says nothing, same mount ns as 7
            process(19, "flux-broker", Some(OTHER), Some(30)),
            process(40, "procwatch-agent", None, Some(40)),
            process(41, "sh", None, Some(40)),
        ]
    }

    fn pod_statuses() -> Vec<ContainerIdentity> {
        vec![
            ContainerIdentity {
                name: "nginx".into(),
                container_id: format!("containerd://{ID}"),
            },
            ContainerIdentity {
                name: "flux".into(),
                container_id: format!("containerd://{OTHER}"),
            },
        ]
    }

    #[test]
    fn pod_groups_take_container_names_without_pause_or_agent() {
        let processes = pod_processes();
        let statuses = pod_statuses();
        let groups = attribute(&processes, Some(&statuses), Some(40));
        assert_eq!(
            summary(&groups, &processes),
            [
                ("flux".to_string(), vec![19]),
                ("nginx".to_string(), vec![7, 8])
            ]
        );
        assert_eq!(
            groups[1].container_id.as_deref(),
            Some(format!("containerd://{ID}").as_str())
        );
    }

    #[test]
    fn agent_container_named_in_the_statuses_is_left_out() {
        // On cgroup v1 the agent sees its own container's ID too.
        let agent_id = "b".repeat(64);
        let processes = vec![
            process(7, "nginx", Some(ID), Some(20)),
            process(40, "procwatch-agent", Some(&agent_id), Some(40)),
        ];
        let mut statuses = pod_statuses();
        statuses.push(ContainerIdentity {
            name: AGENT_CONTAINER_NAME.into(),
            container_id: format!("containerd://{agent_id}"),
        });
        // Even when the agent's own pid is unknown, its container is dropped by name.
        let groups = attribute(&processes, Some(&statuses), None);
        assert_eq!(
            summary(&groups, &processes),
            [("nginx".to_string(), vec![7])]
        );
    }

    #[test]
    fn before_the_statuses_are_known_groups_are_named_by_runtime() {
        let processes = pod_processes();
        let groups = attribute(&processes, Some(&[]), Some(40));
        assert_eq!(
            summary(&groups, &processes),
            [
                ("containerd-3f2a9c1b7e0d".to_string(), vec![7, 8]),
                ("containerd-aaaaaaaaaaaa".to_string(), vec![19])
            ]
        );
    }

    #[test]
    fn on_a_host_uncontained_processes_are_the_host_group() {
        let processes = vec![
            process(1, "init", None, Some(1)),
            process(300, "containerd-shim", None, Some(1)),
            process(310, "pause", Some(SANDBOX), Some(50)),
            process(320, "nginx", Some(ID), Some(60)),
            process(330, "bash", None, None), // ns unreadable
            process(350, "a", Some(ID), Some(90)),
            process(351, "b", Some(OTHER), Some(90)),
            process(352, "c", None, Some(90)), // two containers claim its namespace
            process(340, "procwatch-agent", None, Some(1)),
        ];
        let groups = attribute(&processes, None, Some(340));
        assert_eq!(
            summary(&groups, &processes),
            [
                ("containerd-3f2a9c1b7e0d".to_string(), vec![320, 350]),
                ("containerd-aaaaaaaaaaaa".to_string(), vec![351]),
                ("host".to_string(), vec![1, 300, 330, 352, 340])
            ]
        );
        assert_eq!(groups[2].container_id, None);
    }

    #[test]
    fn a_pause_process_named_in_the_statuses_is_a_container() {
        // Someone's app really called `pause`, and the pod says it is a container.
        let processes = vec![
            process(1, "catatonit", Some(SANDBOX), Some(10)),
            process(9, "pause", Some(ID), Some(20)),
        ];
        let statuses = pod_statuses();
        let groups = attribute(&processes, Some(&statuses), None);
        assert_eq!(
            summary(&groups, &processes),
            [("nginx".to_string(), vec![9])]
        );
    }
}
