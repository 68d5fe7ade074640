//! The scanner's findings in the report protocol's types: what the agent sends does not change
//! when the `ProcessWatch` status does.

use procwatch_crds::report;
use procwatch_crds::{
    ContainerReport, FileFingerprint, ListeningSocket, ProcessInfo, ProcessState, SeccompMode,
    SocketProtocol,
};

pub fn containers(scanned: Vec<ContainerReport>) -> Vec<report::Container> {
    scanned.into_iter().map(container).collect()
}

fn container(scanned: ContainerReport) -> report::Container {
    report::Container {
        name: scanned.name,
        container_id: scanned.container_id,
        process_count: scanned.process_count,
        cpu_millicores: scanned.cpu_millicores,
        memory_bytes: scanned.memory_bytes,
        processes: scanned.processes.into_iter().map(process).collect(),
        listening: scanned.listening.into_iter().map(socket).collect(),
        files: scanned.files.into_iter().map(file).collect(),
        libraries: scanned.libraries,
        truncated: scanned.truncated,
        unreadable: scanned.unreadable,
    }
}

fn process(scanned: ProcessInfo) -> report::Process {
    report::Process {
        pid: scanned.pid,
        ppid: scanned.ppid,
        uid: scanned.uid,
        user: scanned.user,
        command: scanned.command,
        args: scanned.args,
        state: state(scanned.state),
        threads: scanned.threads,
        cpu_millicores: scanned.cpu_millicores,
        cpu_time_millis: scanned.cpu_time_millis,
        memory_bytes: scanned.memory_bytes,
        started_at: scanned.started_at,
        open_files: scanned.open_files,
        open_file_kinds: scanned.open_file_kinds,
        capabilities: scanned.capabilities,
        seccomp: scanned.seccomp.map(seccomp),
        no_new_privs: scanned.no_new_privs,
        environment: scanned.environment,
        exe: scanned.exe,
        cwd: scanned.cwd,
    }
}

fn state(scanned: ProcessState) -> report::ProcessState {
    match scanned {
        ProcessState::Running => report::ProcessState::Running,
        ProcessState::Sleeping => report::ProcessState::Sleeping,
        ProcessState::DiskSleep => report::ProcessState::DiskSleep,
        ProcessState::Stopped => report::ProcessState::Stopped,
        ProcessState::Tracing => report::ProcessState::Tracing,
        ProcessState::Zombie => report::ProcessState::Zombie,
        ProcessState::Dead => report::ProcessState::Dead,
        ProcessState::Idle => report::ProcessState::Idle,
        ProcessState::Other => report::ProcessState::Other,
    }
}

fn seccomp(scanned: SeccompMode) -> report::SeccompMode {
    match scanned {
        SeccompMode::Disabled => report::SeccompMode::Disabled,
        SeccompMode::Strict => report::SeccompMode::Strict,
        SeccompMode::Filter => report::SeccompMode::Filter,
    }
}

fn socket(scanned: ListeningSocket) -> report::ListeningSocket {
    report::ListeningSocket {
        protocol: match scanned.protocol {
            SocketProtocol::Tcp => report::SocketProtocol::Tcp,
            SocketProtocol::Udp => report::SocketProtocol::Udp,
            SocketProtocol::Unix => report::SocketProtocol::Unix,
        },
        address: scanned.address,
        path: scanned.path,
        reachable_at: scanned.reachable_at,
        pid: scanned.pid,
    }
}

fn file(scanned: FileFingerprint) -> report::FileFingerprint {
    report::FileFingerprint {
        path: scanned.path,
        size: scanned.size,
        mode: scanned.mode,
        sha256: scanned.sha256,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A status type serialised as the scanner fills it, and the report sent for it, are the
    /// same JSON: version 1's shape, which the operator's golden fixture pins.
    #[test]
    fn the_report_carries_every_scanned_field() {
        let states = [
            ProcessState::Running,
            ProcessState::Sleeping,
            ProcessState::DiskSleep,
            ProcessState::Stopped,
            ProcessState::Tracing,
            ProcessState::Zombie,
            ProcessState::Dead,
            ProcessState::Idle,
            ProcessState::Other,
        ];
        let seccomps = [
            None,
            Some(SeccompMode::Disabled),
            Some(SeccompMode::Strict),
            Some(SeccompMode::Filter),
        ];
        let processes = states
            .iter()
            .enumerate()
            .map(|(pid, &state)| ProcessInfo {
                pid: pid as i32,
                ppid: 1,
                uid: 101,
                user: Some("nginx".into()),
                command: "nginx".into(),
                args: "nginx: worker process".into(),
                state,
                threads: 2,
                cpu_millicores: 10,
                cpu_time_millis: 250,
                memory_bytes: 2048,
                started_at: None,
                open_files: Some(9),
                open_file_kinds: BTreeMap::from([("socket".into(), 2)]),
                capabilities: vec!["NET_BIND_SERVICE".into()],
                seccomp: seccomps[pid % seccomps.len()],
                no_new_privs: true,
                environment: vec!["PATH=/bin".into()],
                exe: Some("/usr/sbin/nginx".into()),
                cwd: Some("/".into()),
            })
            .collect();
        let listening = [
            SocketProtocol::Tcp,
            SocketProtocol::Udp,
            SocketProtocol::Unix,
        ]
        .into_iter()
        .map(|protocol| ListeningSocket {
            protocol,
            address: Some("0.0.0.0:80".into()),
            path: Some("/run/nginx.sock".into()),
            reachable_at: Some("/proc/7/root/run/nginx.sock".into()),
            pid: Some(7),
        })
        .collect();
        let scanned = ContainerReport {
            name: "nginx".into(),
            container_id: Some("containerd://aaa".into()),
            process_count: 9,
            cpu_millicores: 12,
            memory_bytes: 4096,
            processes,
            listening,
            files: vec![FileFingerprint {
                path: "/etc/nginx/nginx.conf".into(),
                size: 10,
                mode: "0644".into(),
                sha256: "ab".repeat(32),
            }],
            libraries: vec!["/usr/lib/libc.so.6".into()],
            truncated: true,
            unreadable: vec!["environ of pid 7: permission denied".into()],
        };
        let sent = containers(vec![scanned.clone()]);
        assert_eq!(
            serde_json::to_value(&sent[0]).unwrap(),
            serde_json::to_value(&scanned).unwrap()
        );
    }
}
