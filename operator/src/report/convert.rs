//! From the report protocol's types to the `ProcessWatch` status types. The two are kept apart
//! so that either can change without the other; this is where they meet.

use procwatch_crds::report;
use procwatch_crds::{
    ContainerReport, FileFingerprint, ListeningSocket, ProcessInfo, ProcessState, SeccompMode,
    SkippedProcesses, SocketProtocol,
};

pub fn skipped(reported: report::SkippedProcesses) -> SkippedProcesses {
    SkippedProcesses {
        gone: reported.gone,
        unreadable: reported.unreadable,
        out_of_time: reported.out_of_time,
    }
}

pub fn containers(reported: Vec<report::Container>) -> Vec<ContainerReport> {
    reported.into_iter().map(container).collect()
}

fn container(reported: report::Container) -> ContainerReport {
    ContainerReport {
        name: reported.name,
        container_id: reported.container_id,
        process_count: reported.process_count,
        cpu_millicores: reported.cpu_millicores,
        memory_bytes: reported.memory_bytes,
        processes: reported.processes.into_iter().map(process).collect(),
        listening: reported.listening.into_iter().map(socket).collect(),
        files: reported.files.into_iter().map(file).collect(),
        libraries: reported.libraries,
        truncated: reported.truncated,
        unreadable: reported.unreadable,
    }
}

fn process(reported: report::Process) -> ProcessInfo {
    ProcessInfo {
        pid: reported.pid,
        ppid: reported.ppid,
        uid: reported.uid,
        user: reported.user,
        command: reported.command,
        args: reported.args,
        state: state(reported.state),
        threads: reported.threads,
        cpu_millicores: reported.cpu_millicores,
        cpu_time_millis: reported.cpu_time_millis,
        memory_bytes: reported.memory_bytes,
        started_at: reported.started_at,
        open_files: reported.open_files,
        open_file_kinds: reported.open_file_kinds,
        capabilities: reported.capabilities,
        seccomp: reported.seccomp.map(seccomp),
        no_new_privs: reported.no_new_privs,
        environment: reported.environment,
        exe: reported.exe,
        cwd: reported.cwd,
    }
}

fn state(reported: report::ProcessState) -> ProcessState {
    match reported {
        report::ProcessState::Running => ProcessState::Running,
        report::ProcessState::Sleeping => ProcessState::Sleeping,
        report::ProcessState::DiskSleep => ProcessState::DiskSleep,
        report::ProcessState::Stopped => ProcessState::Stopped,
        report::ProcessState::Tracing => ProcessState::Tracing,
        report::ProcessState::Zombie => ProcessState::Zombie,
        report::ProcessState::Dead => ProcessState::Dead,
        report::ProcessState::Idle => ProcessState::Idle,
        report::ProcessState::Other => ProcessState::Other,
    }
}

fn seccomp(reported: report::SeccompMode) -> SeccompMode {
    match reported {
        report::SeccompMode::Disabled => SeccompMode::Disabled,
        report::SeccompMode::Strict => SeccompMode::Strict,
        report::SeccompMode::Filter => SeccompMode::Filter,
    }
}

fn socket(reported: report::ListeningSocket) -> ListeningSocket {
    ListeningSocket {
        protocol: match reported.protocol {
            report::SocketProtocol::Tcp => SocketProtocol::Tcp,
            report::SocketProtocol::Udp => SocketProtocol::Udp,
            report::SocketProtocol::Unix => SocketProtocol::Unix,
        },
        address: reported.address,
        path: reported.path,
        reachable_at: reported.reachable_at,
        pid: reported.pid,
    }
}

fn file(reported: report::FileFingerprint) -> FileFingerprint {
    FileFingerprint {
        path: reported.path,
        size: reported.size,
        mode: reported.mode,
        sha256: reported.sha256,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    #[test]
    fn skipped_processes_reach_the_status_and_none_are_left_out() {
        let reported = report::SkippedProcesses {
            gone: 1,
            unreadable: 2,
            out_of_time: 3,
        };
        let status = skipped(reported);
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            serde_json::json!({"gone": 1, "unreadable": 2, "outOfTime": 3})
        );
        let pod = procwatch_crds::PodReport {
            name: "p".into(),
            ..Default::default()
        };
        assert!(serde_json::to_value(pod).unwrap().get("skipped").is_none());
        // An older agent's report has none.
        let report: report::AgentReport = serde_json::from_str(
            r#"{"podName": "p", "podNamespace": "n", "podUid": "u", "scannedAt": null, "containers": []}"#,
        )
        .unwrap();
        assert!(report.skipped.is_empty());
    }

    #[test]
    fn every_field_reaches_the_status() {
        let started = Time(Timestamp::from_second(1_700_000_000).unwrap());
        let reported = report::Container {
            name: "nginx".into(),
            container_id: Some("containerd://aaa".into()),
            process_count: 3,
            cpu_millicores: 12,
            memory_bytes: 4096,
            processes: vec![report::Process {
                pid: 7,
                ppid: 1,
                uid: 101,
                user: Some("nginx".into()),
                command: "nginx".into(),
                args: "nginx: worker process".into(),
                state: report::ProcessState::DiskSleep,
                threads: 2,
                cpu_millicores: 10,
                cpu_time_millis: 250,
                memory_bytes: 2048,
                started_at: Some(started.clone()),
                open_files: Some(9),
                open_file_kinds: BTreeMap::from([("socket".into(), 2)]),
                capabilities: vec!["NET_BIND_SERVICE".into()],
                seccomp: Some(report::SeccompMode::Filter),
                no_new_privs: true,
                environment: vec!["PATH=/bin".into()],
                exe: Some("/usr/sbin/nginx".into()),
                cwd: Some("/".into()),
            }],
            listening: vec![report::ListeningSocket {
                protocol: report::SocketProtocol::Unix,
                address: None,
                path: Some("/run/nginx.sock".into()),
                reachable_at: Some("/proc/7/root/run/nginx.sock".into()),
                pid: Some(7),
            }],
            files: vec![report::FileFingerprint {
                path: "/etc/nginx/nginx.conf".into(),
                size: 10,
                mode: "0644".into(),
                sha256: "ab".repeat(32),
            }],
            libraries: vec!["/usr/lib/libc.so.6".into()],
            truncated: true,
            unreadable: vec!["environ of pid 7: permission denied".into()],
        };
        let status = containers(vec![reported.clone()]).remove(0);
        // Field for field: the two shapes are still the same JSON.
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::to_value(&reported).unwrap()
        );
        assert_eq!(status.processes[0].state, ProcessState::DiskSleep);
        assert_eq!(status.processes[0].started_at, Some(started));
    }

    #[test]
    fn every_enum_value_has_its_status_twin() {
        use report::ProcessState as Reported;
        for reported in [
            Reported::Running,
            Reported::Sleeping,
            Reported::DiskSleep,
            Reported::Stopped,
            Reported::Tracing,
            Reported::Zombie,
            Reported::Dead,
            Reported::Idle,
            Reported::Other,
        ] {
            assert_eq!(
                serde_json::to_value(state(reported)).unwrap(),
                serde_json::to_value(reported).unwrap()
            );
        }
        for reported in [
            report::SeccompMode::Disabled,
            report::SeccompMode::Strict,
            report::SeccompMode::Filter,
        ] {
            assert_eq!(
                serde_json::to_value(seccomp(reported)).unwrap(),
                serde_json::to_value(reported).unwrap()
            );
        }
        for protocol in [
            report::SocketProtocol::Tcp,
            report::SocketProtocol::Udp,
            report::SocketProtocol::Unix,
        ] {
            let converted = socket(report::ListeningSocket {
                protocol,
                address: None,
                path: None,
                reachable_at: None,
                pid: None,
            });
            assert_eq!(
                serde_json::to_value(converted.protocol).unwrap(),
                serde_json::to_value(protocol).unwrap()
            );
        }
    }
}
