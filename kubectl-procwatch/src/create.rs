//! `kubectl procwatch create NAME --for KIND/NAME`: a ProcessWatch whose selector is the
//! workload's own, and what its existing pods need to be watched.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use procwatch_crds::constants::{AGENT_CONTAINER_NAME, INJECT_LABEL};
use procwatch_crds::{Collect, Interval, ProcessWatch, ProcessWatchSpec};

/// The kinds of workload a watch can be made for: those with a pod selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
}

/// `deployment/web`, as in `kubectl rollout restart deployment/web`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: Kind,
    pub name: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not KIND/NAME with KIND one of deployment, statefulset, daemonset, job")]
pub struct WorkloadError(String);

impl FromStr for Workload {
    type Err = WorkloadError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || WorkloadError(text.to_string());
        let (kind, name) = text.split_once('/').ok_or_else(bad)?;
        // kubectl's names for the kinds: singular, plural, short, with or without the group.
        let kind = match kind.split_once('.').map_or(kind, |(k, _)| k) {
            "deployment" | "deployments" | "deploy" => Kind::Deployment,
            "statefulset" | "statefulsets" | "sts" => Kind::StatefulSet,
            "daemonset" | "daemonsets" | "ds" => Kind::DaemonSet,
            "job" | "jobs" => Kind::Job,
            _ => return Err(bad()),
        };
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(Workload {
            kind,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
            Kind::Job => "job",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

/// What the watch collects besides the defaults.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub files: Vec<String>,
    pub interval: Interval,
    pub ptrace: bool,
}

/// The ProcessWatch `name` in `namespace` over the pods `selector` matches.
pub fn watch(
    name: &str,
    namespace: &str,
    selector: LabelSelector,
    settings: &Settings,
) -> ProcessWatch {
    let mut spec = ProcessWatchSpec {
        selector,
        containers: Vec::new(),
        interval: settings.interval,
        attach: Default::default(),
        collect: Collect {
            files: settings.files.clone(),
            ..Collect::default()
        },
        report: Default::default(),
        agent: Default::default(),
        expect: Vec::new(),
    };
    spec.agent.ptrace = settings.ptrace;
    ProcessWatch {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// Whether the workload's existing pods will be watched, or need a restart first (the agent
/// joins a pod only when it is created).
pub fn restart_advice(workload: &Workload, namespace: &str, pods: &[Pod]) -> String {
    let opted_out = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(INJECT_LABEL))
            .is_some_and(|v| v == "false")
    };
    let has_agent = |p: &Pod| {
        p.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|c| c.name == AGENT_CONTAINER_NAME)
        })
    };
    let out = pods.iter().filter(|p| opted_out(p)).count();
    let without: Vec<&Pod> = pods
        .iter()
        .filter(|p| !opted_out(p) && !has_agent(p))
        .collect();
    let out_note = match out {
        0 => String::new(),
        n => format!(" ({n} opted out with the label {INJECT_LABEL}=false, never watched)"),
    };
    if pods.is_empty() {
        return format!("{workload} has no pods yet: they get the agent when they are created.");
    }
    if without.is_empty() {
        return format!(
            "{} of {} pods of {workload} already run the agent: no restart needed{out_note}.",
            pods.len() - out,
            pods.len()
        );
    }
    let how = match workload.kind {
        Kind::Job => format!(
            "delete them and the Job creates new ones: kubectl delete pod -n {namespace} {}",
            without
                .iter()
                .filter_map(|p| p.metadata.name.as_deref())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => format!("kubectl rollout restart -n {namespace} {workload}"),
    };
    format!(
        "{} of {} pods of {workload} were created without the agent and need a restart to be watched: {how}{out_note}.",
        without.len(),
        pods.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use std::collections::BTreeMap;

    #[test]
    fn workloads_parse_like_kubectl() {
        let w: Workload = "deployment/web".parse().unwrap();
        assert_eq!(
            w,
            Workload {
                kind: Kind::Deployment,
                name: "web".into()
            }
        );
        assert_eq!("deploy/web".parse::<Workload>().unwrap(), w);
        assert_eq!("deployments.apps/web".parse::<Workload>().unwrap(), w);
        assert_eq!(
            "sts/db".parse::<Workload>().unwrap().kind,
            Kind::StatefulSet
        );
        assert_eq!(
            "ds/x".parse::<Workload>().unwrap().to_string(),
            "daemonset/x"
        );
        assert_eq!("job/y".parse::<Workload>().unwrap().kind, Kind::Job);
        for bad in ["web", "pod/web", "deployment/", "deployment/a/b"] {
            assert!(bad.parse::<Workload>().is_err(), "{bad}");
        }
    }

    fn pod(name: &str, containers: &[&str], labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .map(|c| Container {
                        name: c.to_string(),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn advice_names_what_to_restart() {
        let web: Workload = "deployment/web".parse().unwrap();
        assert_eq!(
            restart_advice(&web, "shop", &[]),
            "deployment/web has no pods yet: they get the agent when they are created."
        );
        let watched = pod("web-1", &["nginx", AGENT_CONTAINER_NAME], &[]);
        let plain = pod("web-2", &["nginx"], &[]);
        let out = pod("web-3", &["nginx"], &[(INJECT_LABEL, "false")]);
        assert_eq!(
            restart_advice(&web, "shop", std::slice::from_ref(&watched)),
            "1 of 1 pods of deployment/web already run the agent: no restart needed."
        );
        assert_eq!(
            restart_advice(&web, "shop", &[watched, plain.clone(), out]),
            "1 of 3 pods of deployment/web were created without the agent and need a restart to be watched: \
             kubectl rollout restart -n shop deployment/web (1 opted out with the label procwatch.dev/inject=false, never watched)."
        );
        let job: Workload = "job/train".parse().unwrap();
        assert_eq!(
            restart_advice(&job, "ml", &[plain]),
            "1 of 1 pods of job/train were created without the agent and need a restart to be watched: \
             delete them and the Job creates new ones: kubectl delete pod -n ml web-2."
        );
    }

    #[test]
    fn the_watch_takes_the_selector_and_settings() {
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "nginx".into())])),
            ..LabelSelector::default()
        };
        let settings = Settings {
            files: vec!["/etc/nginx/nginx.conf".into()],
            interval: "30s".parse().unwrap(),
            ptrace: true,
        };
        let pw = watch("web2", "shop", selector.clone(), &settings);
        assert_eq!(pw.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(pw.spec.selector, selector);
        assert_eq!(pw.spec.collect.files, settings.files);
        assert_eq!(pw.spec.interval.to_string(), "30s");
        assert!(pw.spec.agent.ptrace);
        assert!(pw.spec.collect.sockets && pw.spec.collect.open_files);
    }
}
