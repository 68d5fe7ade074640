//! Objects the unit tests of several modules build: a watch, its pods, what their agents
//! report, and a TLS client that trusts a test CA.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_crds::{
    ContainerReport, FileFingerprint, ProcessInfo, ProcessWatch, ProcessWatchSpec,
};

use crate::report::store::PodFindings;

pub fn watch(name: &str) -> ProcessWatch {
    let mut watch = ProcessWatch::new(
        name,
        ProcessWatchSpec {
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                match_expressions: None,
            },
            containers: vec![],
            interval: "10s".parse().unwrap(),
            attach: Default::default(),
            collect: Default::default(),
            report: Default::default(),
            agent: Default::default(),
            expect: vec![],
        },
    );
    watch.metadata.namespace = Some("shop".into());
    watch.metadata.uid = Some(format!("uid-{name}"));
    watch.metadata.generation = Some(2);
    watch
}

pub fn pod(name: &str, app: &str, with_agent: bool) -> Pod {
    let container = |name: &str| Container {
        name: name.into(),
        ..Container::default()
    };
    let mut containers = vec![container("nginx")];
    if with_agent {
        containers.push(container(AGENT_CONTAINER_NAME));
    }
    let mut pod = Pod {
        spec: Some(PodSpec {
            containers,
            node_name: Some("node-1".into()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    pod.metadata.name = Some(name.into());
    pod.metadata.namespace = Some("shop".into());
    pod.metadata.uid = Some(format!("uid-{name}"));
    pod.metadata.labels = Some([("app".to_string(), app.to_string())].into());
    pod
}

pub fn process(pid: i32, command: &str, cpu: u64) -> ProcessInfo {
    ProcessInfo {
        pid,
        command: command.into(),
        cpu_millicores: cpu,
        memory_bytes: 1000,
        environment: vec!["PATH=/bin".into(), "SECRET=x".into()],
        open_files: Some(3),
        ..ProcessInfo::default()
    }
}

pub fn findings(
    pod: &str,
    at: Timestamp,
    containers: Vec<ContainerReport>,
) -> (String, PodFindings) {
    let findings = PodFindings {
        uid: format!("uid-{pod}"),
        received_at: at,
        containers,
        skipped: Default::default(),
        pids: None,
        detailed: true,
    };
    (pod.to_string(), findings)
}

/// An nginx container as an agent reports it when it lists every process.
pub fn nginx(processes: Vec<ProcessInfo>, sha: &str) -> ContainerReport {
    ContainerReport {
        name: "nginx".into(),
        process_count: u32::try_from(processes.len()).unwrap(),
        cpu_millicores: processes.iter().map(|p| p.cpu_millicores).sum(),
        memory_bytes: processes.iter().map(|p| p.memory_bytes).sum(),
        processes,
        files: vec![FileFingerprint {
            path: "/etc/nginx/nginx.conf".into(),
            size: 1,
            mode: "0644".into(),
            sha256: sha.into(),
        }],
        libraries: vec!["/lib/libc.so.6".into()],
        ..ContainerReport::default()
    }
}

/// A TLS connector that trusts the CAs in `ca_pem` (and nothing else).
pub fn tls_connector_trusting(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
