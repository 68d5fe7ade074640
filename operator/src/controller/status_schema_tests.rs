//! Property test: whatever agents report, the status the controller writes fits the CRD's
//! schema as kube-apiserver 1.20 applies it, so no single value can make it refuse a status.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::CustomResourceExt;
use procwatch_crds::{
    ContainerReport, Expectation, ExpectedFile, FileFingerprint, ListeningSocket, ProcessInfo,
    ProcessState, ProcessWatch, SeccompMode, SocketProtocol,
};
use proptest::prelude::*;
use serde_json::Value;

use super::conditions;
use super::status::{self, SelectedPod};
use crate::budget;
use crate::fixtures::{pod, watch};
use crate::report::store::PodFindings;

/// The `status` schema of the generated CRD, as a JSON schema: OpenAPI's `nullable` becomes a
/// `null` type; the Kubernetes extensions are ignored by the validator.
fn status_validator() -> jsonschema::Validator {
    let crd = serde_json::to_value(ProcessWatch::crd()).unwrap();
    let mut schema =
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"].clone();
    nullable_as_null_type(&mut schema);
    jsonschema::draft4::new(&schema).expect("the CRD's status schema compiles")
}

fn nullable_as_null_type(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(kind)) = map.get("type").cloned()
            {
                map.insert("type".into(), serde_json::json!([kind, "null"]));
            }
            map.values_mut().for_each(nullable_as_null_type);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_as_null_type),
        _ => {}
    }
}

/// What kube-apiserver 1.20 makes of a server-side apply body (seen on the test cluster): an
/// empty string anywhere, in a field or a list, becomes null.
fn as_applied(value: &mut Value) {
    match value {
        Value::String(text) if text.is_empty() => *value = Value::Null,
        Value::Object(map) => map.values_mut().for_each(as_applied),
        Value::Array(items) => items.iter_mut().for_each(as_applied),
        _ => {}
    }
}

/// The API server reads integers as int64.
fn larger_than_int64(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) if n.as_i64().is_none() => Some(n.to_string()),
        Value::Object(map) => map.values().find_map(larger_than_int64),
        Value::Array(items) => items.iter().find_map(larger_than_int64),
        _ => None,
    }
}

/// Strings as a hostile or broken agent may send them: empty, odd characters, or long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        6 => "\\PC{0,40}",
        1 => "[a-z]{1,8}".prop_map(|s| s.repeat(2000)),
    ]
}

fn maybe_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), any::<u64>(), 0..10_000u64]
}

fn state() -> impl Strategy<Value = ProcessState> {
    prop_oneof![
        Just(ProcessState::Running),
        Just(ProcessState::Sleeping),
        Just(ProcessState::DiskSleep),
        Just(ProcessState::Stopped),
        Just(ProcessState::Tracing),
        Just(ProcessState::Zombie),
        Just(ProcessState::Dead),
        Just(ProcessState::Idle),
        Just(ProcessState::Other),
    ]
}

prop_compose! {
    fn process()(
        pid in prop_oneof![any::<i32>(), 1..40i32],
        (ppid, uid, threads) in (any::<i32>(), any::<u32>(), any::<u32>()),
        (user, command, args) in (maybe_text(), text(), text()),
        state in state(),
        (cpu_millicores, cpu_time_millis, memory_bytes) in (number(), number(), number()),
        open_files in proptest::option::of(any::<u32>()),
        open_file_kinds in proptest::collection::btree_map("[a-z]{1,6}", any::<u32>(), 0..3),
        capabilities in proptest::collection::vec(text(), 0..3),
        seccomp in proptest::option::of(prop_oneof![
            Just(SeccompMode::Disabled), Just(SeccompMode::Strict), Just(SeccompMode::Filter)
        ]),
        no_new_privs in any::<bool>(),
        environment in proptest::collection::vec(text(), 0..3),
        (exe, cwd) in (maybe_text(), maybe_text()),
    ) -> ProcessInfo {
        ProcessInfo {
            pid, ppid, uid, user, command, args, state, threads, cpu_millicores,
            cpu_time_millis, memory_bytes, started_at: None, open_files, open_file_kinds,
            capabilities, seccomp, no_new_privs, environment, exe, cwd,
        }
    }
}

prop_compose! {
    fn socket()(
        protocol in prop_oneof![
            Just(SocketProtocol::Tcp), Just(SocketProtocol::Udp), Just(SocketProtocol::Unix)
        ],
        (address, path, reachable_at) in (maybe_text(), maybe_text(), maybe_text()),
        pid in proptest::option::of(any::<i32>()),
    ) -> ListeningSocket {
        ListeningSocket { protocol, address, path, reachable_at, pid }
    }
}

prop_compose! {
    fn fingerprint()(
        path in prop_oneof![Just("/etc/nginx/nginx.conf".to_string()), text()],
        size in number(),
        (mode, sha256) in (text(), text()),
    ) -> FileFingerprint {
        FileFingerprint { path, size, mode, sha256 }
    }
}

prop_compose! {
    fn container()(
        name in prop_oneof![Just("nginx".to_string()), Just("sidecar".to_string()), text()],
        container_id in maybe_text(),
        process_count in any::<u32>(),
        (cpu_millicores, memory_bytes) in (number(), number()),
        processes in proptest::collection::vec(process(), 0..12),
        listening in proptest::collection::vec(socket(), 0..3),
        files in proptest::collection::vec(fingerprint(), 0..2),
        libraries in proptest::collection::vec(text(), 0..3),
        truncated in any::<bool>(),
        unreadable in proptest::collection::vec(text(), 0..3),
    ) -> ContainerReport {
        ContainerReport {
            name, container_id, process_count, cpu_millicores, memory_bytes, processes,
            listening, files, libraries, truncated, unreadable,
        }
    }
}

fn reports() -> impl Strategy<Value = Vec<Vec<ContainerReport>>> {
    proptest::collection::vec(proptest::collection::vec(container(), 0..3), 0..4)
}

/// Rules that whatever an agent reports may break: every violation and the declared file
/// content end up in the status.
fn strict_rules() -> Vec<Expectation> {
    vec![Expectation {
        container: "*".into(),
        commands: Some(vec!["nginx".into()]),
        users: Some(vec!["root".into()]),
        non_root_except: Some(vec![]),
        max_processes: Some(1),
        listening: Some(vec!["TCP 127.0.0.1:*".into()]),
        forbid_capabilities: Some(vec!["SYS_ADMIN".into()]),
        no_new_privs: Some(true),
        seccomp: Some(vec![SeccompMode::Filter]),
        files: Some(vec![ExpectedFile {
            path: "/etc/nginx/nginx.conf".into(),
            sha256: "0".repeat(64),
        }]),
    }]
}

/// The status the controller would write for pods that reported `reports`, with pid figures
/// `pids` on the listed pods.
fn written_status(
    reports: Vec<Vec<ContainerReport>>,
    pids: (Option<u64>, Option<u64>),
    budget_bytes: usize,
) -> Value {
    let mut watch = watch("web");
    watch.spec.collect.files = vec!["/etc/nginx/nginx.conf".into()];
    watch.spec.collect.libraries = true;
    watch.spec.expect = strict_rules();
    let now = Timestamp::now();
    let selected: Vec<SelectedPod> = reports
        .into_iter()
        .enumerate()
        .map(|(i, containers)| {
            let pod = pod(&format!("web-{i}"), "web", true);
            let findings = PodFindings {
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                received_at: now,
                containers,
                skipped: Default::default(),
                pids: None,
                detailed: true,
            };
            SelectedPod {
                pod: Arc::new(pod),
                attached: true,
                opted_out: false,
                terminating: false,
                findings: Some(Arc::new(findings)),
            }
        })
        .collect();
    let built = status::build(&watch, &selected);
    let mut status = built.status;
    for pod in &mut status.pods {
        (pod.pids_allocated, pod.pids_per_minute) = pids;
    }
    status.conditions = conditions::conditions(
        &built.facts,
        watch.metadata.generation,
        &[],
        &status::whole_seconds(now),
    );
    budget::fit(&mut status, budget_bytes);
    serde_json::to_value(&status).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_report_makes_a_status_the_api_server_accepts(
        reports in reports(),
        pids in (proptest::option::of(number()), proptest::option::of(number())),
        budget_bytes in prop_oneof![Just(budget::DEFAULT_STATUS_BUDGET_BYTES), 2_000..40_000usize],
    ) {
        let validator = status_validator();
        let mut status = written_status(reports, pids, budget_bytes);
        prop_assert_eq!(larger_than_int64(&status), None);
        as_applied(&mut status);
        let errors: Vec<String> = validator
            .iter_errors(&status)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        prop_assert!(errors.is_empty(), "refused: {:?}", errors);
    }
}

#[test]
fn the_checks_refuse_what_the_api_server_refuses() {
    let validator = status_validator();
    let mut empty_args = serde_json::json!({
        "pods": [{"name": "web-1", "containers": [{"name": "nginx", "processes": [
            {"pid": 7, "state": "Zombie", "args": ""}
        ]}]}]
    });
    assert!(validator.is_valid(&empty_args));
    as_applied(&mut empty_args);
    assert!(!validator.is_valid(&empty_args), "null args are refused");
    let huge = serde_json::json!({"processes": u64::MAX});
    assert_eq!(larger_than_int64(&huge), Some(u64::MAX.to_string()));
}
