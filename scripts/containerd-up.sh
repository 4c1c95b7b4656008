#!/usr/bin/env bash
# Start a private containerd whose root, state, sockets and opt dir all live under DIR.
#
#   scripts/containerd-up.sh DIR [VERSION] [SHIM_DIR...]
#
# VERSION: 1.6 (Debian 12, default), 1.7 (Debian 13) or 2.1 (Debian unstable); see fetch-containerd.sh.
# SHIM_DIR: directories put first on containerd's PATH (where it finds containerd-shim-*-v2 binaries).
# A DIR/config.toml that exists already is used as is (it must put root, state and sockets under DIR).
# Writes DIR/env (CONTAINERD_SOCK, CTR, CONTAINERD_BIN_DIR, ...) and DIR/containerd.pid; logs to DIR/containerd.log.
# Stop it with scripts/containerd-down.sh DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

dir=${1:?usage: containerd-up.sh DIR [VERSION] [SHIM_DIR...]}
ver=${2:-1.6}
shift 2 2>/dev/null || shift $#
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

bindir=$("$here/fetch-containerd.sh" "$ver")
sock=$dir/containerd.sock
if [ ${#sock} -gt 100 ]; then echo "containerd-up: $sock is too long for a unix socket" >&2; exit 1; fi

shimpath=""
for d in "$@"; do shimpath="$shimpath$(cd "$d" && pwd):"; done

# A config.toml the caller wrote first (the CRI test's: CRI enabled, runtime handlers) is used as is.
[ -f "$dir/config.toml" ] || cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
oom_score = 0

[grpc]
  address = "$sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[debug]
  address = "$dir/debug.sock"
  level = "${PREDICTIVE_CONTAINERD_LOG_LEVEL:-info}"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
TOML

# The predictive shim and broker read this file (PREDICTIVE_CONFIG in containerd's environment, which its shims
# inherit): a broker private to this containerd, started by the first shim that finds none. A caller may
# write DIR/predictive.toml first to tune it.
if [ ! -f "$dir/predictive.toml" ]; then
    cat > "$dir/predictive.toml" <<TOML
state_dir = "$dir/broker"
socket = "$dir/broker.sock"
TOML
fi

cat > "$dir/env" <<ENV
CONTAINERD_DIR=$dir
CONTAINERD_VERSION=$ver
CONTAINERD_SOCK=$sock
CONTAINERD_BIN_DIR=$bindir
CTR=$bindir/ctr
PREDICTIVE_CONFIG=$dir/predictive.toml
BROKER_SOCK=$dir/broker.sock
ENV

PREDICTIVE_CONFIG="$dir/predictive.toml" \
PATH="$shimpath$bindir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    setsid "$bindir/containerd" --config "$dir/config.toml" </dev/null >"$dir/containerd.log" 2>&1 &
pid=$!
echo "$pid" > "$dir/containerd.pid"

for _ in $(seq 1 300); do
    if [ -S "$sock" ] && "$bindir/ctr" -a "$sock" version >/dev/null 2>&1; then
        echo "containerd $ver (pid $pid) listening on $sock"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "containerd-up: containerd exited; log:" >&2; tail -n 30 "$dir/containerd.log" >&2; exit 1
    fi
    sleep 0.1
done
echo "containerd-up: containerd did not answer on $sock within 30 s; log:" >&2
tail -n 30 "$dir/containerd.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
