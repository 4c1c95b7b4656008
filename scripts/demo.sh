#!/usr/bin/env bash
# `make demo`: a private containerd with our shim on its PATH, a few containers run through
# `ctr run --runtime io.containerd.predictive.v2`, what they did, then everything stopped and removed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runtime=${PREDICTIVE_DEMO_RUNTIME:-io.containerd.predictive.v2}
version=${PREDICTIVE_E2E_CONTAINERD:-1.6}
shimdir=$root/target/release
cache=${PREDICTIVE_E2E_CACHE:-/var/cache/predictive-e2e}
image=docker.io/predictive/busybox:latest
dir=/tmp/predictive-demo-$$
ns=demo
tag=$$

if [ "$runtime" = io.containerd.predictive.v2 ] && [ ! -x "$shimdir/containerd-shim-predictive-v2" ]; then
    echo "demo: $shimdir/containerd-shim-predictive-v2 is missing: run 'make build'" >&2; exit 1
fi
[ "$(id -u)" = 0 ] || { echo "demo: needs root (containerd, cgroups, mounts)" >&2; exit 1; }

cleanup() {
    echo; echo "### stopping containerd and cleaning up"
    scripts/containerd-down.sh "$dir"
    for d in /sys/fs/cgroup/*/$ns-$tag /sys/fs/cgroup/*/$ns /run/containerd/runc/$ns; do rmdir "$d" 2>/dev/null || true; done
    left=$(pgrep -f -- "$dir" || true)
    cg=$(ls -d /sys/fs/cgroup/*/$ns/* 2>/dev/null || true)
    if [ -z "$left" ] && [ -z "$cg" ] && ! grep -q "$dir" /proc/self/mountinfo; then
        echo "done: no containerd, shim, container, cgroup or mount left from the demo"
    else
        echo "demo: left behind: processes [$left] cgroups [$cg]" >&2
    fi
}
trap cleanup EXIT

mkdir -p "$cache"
[ -s "$cache/busybox-image.tar" ] || scripts/make-image.sh "$cache/busybox-image.tar" >/dev/null
# The broker the first shim starts: retrain after every run once a task type has 3, so the demo shows a prediction.
mkdir -p "$dir"
cat > "$dir/predictive.toml" <<TOML
state_dir = "$dir/broker"
socket = "$dir/broker.sock"
retrain_check_ms = 300
[retrain]
new_runs = 1
min_runs = 3
TOML
scripts/containerd-up.sh "$dir" "$version" "$shimdir"
. "$dir/env"
ns=$ns-$tag
ctr() { echo "+ ctr -n $ns $*" >&2; "$CTR" -a "$CONTAINERD_SOCK" -n "$ns" "$@"; }
show() { local rc=0; "$@" || rc=$?; echo "  -> exit code $rc"; }

ctr images import "$cache/busybox-image.tar" >/dev/null
echo
echo "### 1. output and exit code"
show ctr run --rm --runtime "$runtime" "$image" hello-$tag sh -c 'echo "hello from $(hostname), pid $$, kernel $(uname -r)"'
echo
echo "### 2. a failing command's exit code comes back"
show ctr run --rm --runtime "$runtime" "$image" fail-$tag sh -c 'echo about to exit 3; exit 3'
echo
echo "### 3. a long-running container: status, runtime, exec, metrics"
ctr run -d --null-io --runtime "$runtime" --memory-limit 67108864 "$image" web-$tag sh -c 'while :; do sleep 1; done'
sleep 0.5
ctr t ls
echo "runtime: $("$CTR" -a "$CONTAINERD_SOCK" -n "$ns" c info web-$tag | grep -m1 '"Name"' | tr -d ' ,')"
shim=$(pgrep -f -- "-address $CONTAINERD_SOCK" | head -n1 || true)
[ -n "$shim" ] && echo "shim process: $shim $(tr '\0' ' ' < /proc/$shim/cmdline | cut -c1-100) (VmRSS $(awk '/VmRSS/{print $2" "$3}' /proc/$shim/status))"
show ctr t exec --exec-id ps-$tag web-$tag ps
show ctr t exec --exec-id x-$tag web-$tag sh -c 'echo "exec in $(hostname) as $(id -un)"; exit 4'
ctr t metrics web-$tag
echo
echo "### 4. SIGKILL"
ctr t kill -s SIGKILL web-$tag
sleep 0.5
ctr t ls
ctr t rm web-$tag >/dev/null
ctr c rm web-$tag
echo
echo "### 5. seccomp (ctr --seccomp puts containerd's default profile in the spec)"
show ctr run --rm --seccomp --runtime "$runtime" "$image" sec-$tag grep Seccomp: /proc/self/status
if [ "$runtime" = io.containerd.predictive.v2 ]; then
    pctl() { echo "+ predictivectl $*" >&2; "$shimdir/predictivectl" --socket "$dir/broker.sock" "$@"; }
    job() { # name: a job that allocates 24 MiB in user space and works for 2 s
        ctr run --rm --runtime "$runtime" --memory-limit 536870912 --annotation io.predictive.task-type=demo-etl \
            "$image" "$1" awk 'BEGIN{s=sprintf("%1048576s",""); for(n=0;n<24;n++) a[n]=s; system("sleep 2")}'
    }
    echo
    echo "### 6. prediction: three runs of task type demo-etl with a 512 MiB limit, then the fourth starts predicted"
    for i in 1 2 3; do job etl$i-$tag; done
    for _ in $(seq 1 50); do
        "$shimdir/predictivectl" --socket "$dir/broker.sock" models 2>/dev/null | grep '^demo-etl ' | grep -qv 'none' && break
        sleep 0.2
    done
    pctl models
    ctr run -d --null-io --runtime "$runtime" --memory-limit 536870912 --annotation io.predictive.task-type=demo-etl \
        "$image" etl4-$tag awk 'BEGIN{s=sprintf("%1048576s",""); for(n=0;n<24;n++) a[n]=s; system("sleep 3")}'
    sleep 1.5
    echo "spec memory limit 536870912; memory.limit_in_bytes at start: $(cat /sys/fs/cgroup/memory/$ns/etl4-$tag/memory.limit_in_bytes)"
    pctl status
    sleep 2
    pctl explain etl4-$tag
    for _ in $(seq 1 50); do [ "$("$CTR" -a "$CONTAINERD_SOCK" -n "$ns" t ls -q | grep -c etl4)" = 0 ] && break
        ctr t ls | grep -q 'etl4.*STOPPED' && break; sleep 0.2; done
    ctr t rm -f etl4-$tag >/dev/null 2>&1 || true
    ctr c rm etl4-$tag
fi
