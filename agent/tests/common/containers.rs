//! Real processes in their own mount and PID namespaces, in cgroups named like a kubelet +
//! containerd pod: the closest a test can get to a pod without a container runtime.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cgroup hierarchy root may create groups in: v1 `pids` on hybrid hosts, else v2.
pub fn cgroup_root() -> Option<PathBuf> {
    [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|root| root.join("cgroup.procs").exists() && is_writable(root))
}

fn is_writable(dir: &Path) -> bool {
    let probe = dir.join(format!("procwatch-probe-{}", std::process::id()));
    let created = std::fs::create_dir(&probe).is_ok();
    if created {
        let _ = std::fs::remove_dir(&probe);
    }
    created
}

/// Whether this test can run here (root with unshare, socat and a writable cgroup hierarchy);
/// when not, records the skip and why (see [`super::skip`]).
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = Command::new("unshare")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    let socat = Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    let cgroups = cgroup_root().is_some();
    if root && unshare && socat && cgroups {
        return true;
    }
    super::skip::skip(&format!(
        "needs root, unshare, socat and a writable cgroup hierarchy \
         (root={root} unshare={unshare} socat={socat} writable cgroups={cgroups})"
    ));
    false
}

pub fn random_hex(len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap())
        .collect()
}

pub fn random_pod_uid() -> String {
    format!(
        "{}-{}-{}-{}-{}",
        random_hex(8),
        random_hex(4),
        random_hex(4),
        random_hex(4),
        random_hex(12)
    )
}

/// The systemd-driver path of a container of a BestEffort pod.
pub fn systemd_cgroup(pod_uid: &str, container_id: &str) -> String {
    let pod = pod_uid.replace('-', "_");
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod}.slice/cri-containerd-{container_id}.scope"
    )
}

/// The cgroupfs-driver path.
pub fn cgroupfs_cgroup(pod_uid: &str, container_id: &str) -> String {
    format!("kubepods/besteffort/pod{pod_uid}/{container_id}")
}

/// A shell script run as PID 1 of new mount and PID namespaces, in a cgroup; killed and its
/// cgroup removed on drop.
pub struct FakeContainer {
    pub id: String,
    pub cgroup: PathBuf,
    /// Cgroup directories this container created, outermost first: only these are removed
    /// (a real kubelet's `kubepods` on the same machine stays).
    created: Vec<PathBuf>,
    child: Child,
}

impl FakeContainer {
    pub fn start(cgroup_relative: &str, id: &str, script: &str) -> Self {
        let root = cgroup_root().expect("a cgroup hierarchy");
        let cgroup = root.join(cgroup_relative);
        let mut created = Vec::new();
        let mut dir = root;
        for component in Path::new(cgroup_relative).components() {
            dir.push(component);
            if std::fs::create_dir(&dir).is_ok() {
                created.push(dir.clone());
            }
        }
        assert!(cgroup.is_dir(), "cannot create {}", cgroup.display());
        // Join the cgroup first, so every process of the "container" is born in it.
        let launcher = format!(
            "echo $$ > {}/cgroup.procs && exec unshare --mount --propagation private --pid --fork --mount-proc sh -c \"$0\"",
            cgroup.display()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(launcher)
            .arg(script)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        FakeContainer {
            id: id.to_string(),
            cgroup,
            created,
            child,
        }
    }

    /// Pids in the container's cgroup (host view).
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.parse().ok())
            .collect()
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the group is our child's.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in self.created.iter().rev() {
            // A parent that still holds another test container's cgroup stays: its creator,
            // dropped later, removes it.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Polls `check` until it returns `Some` or the time is up.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
