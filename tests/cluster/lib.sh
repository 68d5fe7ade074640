# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
# Shared settings of the tests/cluster scripts. Sourced, not executed.

K8S_VERSION=1.20.2
# Binaries are cached outside the clone, keyed by the Kubernetes version, so only the first
# run on a machine pays for the build.
CACHE_ROOT=${PROCWATCH_CACHE:-/var/cache/procwatch}
CACHE_DIR=$CACHE_ROOT/k8s-$K8S_VERSION
BIN_DIR=$CACHE_DIR/bin
IMAGE_DIR=$CACHE_DIR/images
# Every piece of state of a running cluster lives under this one directory.
WORK_DIR=${PROCWATCH_CLUSTER_DIR:-/var/tmp/procwatch-cluster}
CLUSTER_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The binaries a complete cache holds.
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
CACHE_FILES=("${K8S_BINARIES[@]}" pause cni/loopback cni/procwatch-lo)

log() { printf '%s [cluster] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# containerd of the running cluster (images are imported through it).
CONTAINERD_SOCK=$WORK_DIR/run/containerd/containerd.sock
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
containerd_running() {
  [ -S "$CONTAINERD_SOCK" ] && ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1
}

# Loopback ports of the control plane (fixed: one test cluster per machine).
ETCD_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=${PROCWATCH_APISERVER_PORT:-6443}
KUBECONFIG_PATH=$WORK_DIR/admin.kubeconfig
# Daemons in start order; down stops them in the order of the testbed notes.
PID_DIR=$WORK_DIR/pids
LOG_DIR=$WORK_DIR/logs
# The kubelet's cgroupRoot: pods live in <root>/kubepods/<qos>/pod<uid>/<container id> of every
# hierarchy. Default /kubelet, as on kind nodes: the kubelet kills the processes of pod cgroups
# it does not know and down removes the cgroups under the root, so neither may share a top-level
# /kubepods with the host or with other tests (the agent's tests make /kubepods/besteffort/pod…
# cgroups of their own). PROCWATCH_KUBELET_CGROUP_ROOT=/ gives the bare /kubepods/… form on a
# machine where nothing else uses it.
KUBELET_CGROUP_ROOT=${PROCWATCH_KUBELET_CGROUP_ROOT:-/kubelet}
case $KUBELET_CGROUP_ROOT in
/) CGROUP_NAMES=(kubepods) ;;
/*) CGROUP_NAMES=("${KUBELET_CGROUP_ROOT#/}") ;;
*) die "PROCWATCH_KUBELET_CGROUP_ROOT must be / or /<name>" ;;
esac
[[ ${CGROUP_NAMES[0]} =~ ^[A-Za-z0-9_.-]+$ ]] || die "PROCWATCH_KUBELET_CGROUP_ROOT must be / or /<name>" 
# The sysctls the kubelet sets at start (pkg/kubelet/cm: setupKernelTunables); saved by up,
# restored by down.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# Directories outside the work dir that containerd, the shims, libcni and the kubelet create at
# fixed paths. up records which did not exist before; down removes those once they are empty.
HOST_DIRS=(/run/containerd /run/containerd/s /var/lib/cni /var/lib/cni/results /var/log/pods)

kubectl_() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# pid_alive NAME: the daemon recorded in $PID_DIR/NAME.pid still runs (and is the same process:
# the recorded start time must match, so a recycled PID is never mistaken for ours).
pid_of() { [ -f "$PID_DIR/$1.pid" ] && cut -d' ' -f1 "$PID_DIR/$1.pid"; }
# Fields of /proc/PID/stat after "(comm) " (comm may hold spaces): 1 = state, 20 = start time.
proc_stat() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null; }
proc_start() { proc_stat "$1" | cut -d' ' -f20; }
pid_alive() {
  local pid start stat
  [ -f "$PID_DIR/$1.pid" ] || return 1
  read -r pid start <"$PID_DIR/$1.pid"
  [ -n "$pid" ] || return 1
  stat=$(proc_stat "$pid") || return 1
  # A zombie has exited; PID 1 of this machine reaps orphans only every few seconds.
  [ -n "$stat" ] && [ "${stat%% *}" != Z ] && [ "$(cut -d' ' -f20 <<<"$stat")" = "$start" ]
}

# --- daemons ----------------------------------------------------------------------------------

# start NAME CMD...: run a daemon detached (own session, so it outlives this script and the
# caller's process group), output to logs/NAME.log, "PID STARTTIME" to pids/NAME.pid.
# The daemon does not inherit run-e2e's cluster lock: a run killed before its down must not
# leave the lock held by the daemons it started.
start() {
  local name=$1 lock_fd=${PROCWATCH_CLUSTER_LOCK_FD:-}
  shift
  if [ -n "$lock_fd" ]; then
    setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null {lock_fd}>&- &
  else
    setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  fi
  local pid=$!
  sleep 0.1
  echo "$pid $(proc_start "$pid")" >"$PID_DIR/$name.pid"
  pid_alive "$name" || { tail -n 20 "$LOG_DIR/$name.log" >&2; die "$name exited at once"; }
}

# wait_until SECONDS DESC CMD...: poll CMD until it succeeds; on timeout show the daemons' logs.
wait_until() {
  local timeout=$1 desc=$2 deadline
  shift 2
  deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      local f
      for f in "$LOG_DIR"/*.log; do
        echo "==> $f <==" >&2
        tail -n 15 "$f" >&2
      done
      die "timed out after ${timeout}s waiting for $desc"
    fi
    sleep 0.5
  done
}

# stop NAME [SECONDS]: SIGTERM the daemon of pids/NAME.pid, SIGKILL after SECONDS (default 15).
stop() {
  local name=$1 timeout=${2:-15} pid i
  if pid_alive "$name"; then
    pid=$(pid_of "$name")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
      pid_alive "$name" || break
      sleep 0.1
    done
    if pid_alive "$name"; then
      log "$name ignored SIGTERM for ${timeout}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  pid_alive "$name" || rm -f "$PID_DIR/$name.pid"
}


# The API server, started by up and by `apiserver start` (after `apiserver stop`, to test an
# outage), with the certificates and tokens up made. Returns once /readyz answers.
# --api-audiences is the API server's own audience only: a projected token with audience
# "procwatch" is then useless against the API server, but a TokenReview that names the audience
# "procwatch" accepts it (how the operator authenticates agents).
start_apiserver() {
  local pki=$WORK_DIR/pki
  start kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" --insecure-port=0 \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-signing-key-file="$pki/sa.key" --service-account-key-file="$pki/sa.pub" \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$pki/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --allow-privileged=true --feature-gates=EphemeralContainers=true \
    --cert-dir="$WORK_DIR/kube-apiserver" --profiling=false --v=1
  wait_until 60 "kube-apiserver /readyz" kubectl_ get --raw=/readyz
}

# stop_apiserver [SECONDS]: SIGTERM, SIGKILL after SECONDS (default 30). The API server drains
# its requests first, which takes 5-45 s (its watches last until their timeout).
stop_apiserver() { stop kube-apiserver "${1:-30}"; }
