#!/usr/bin/env bash
# The shim's CPU and RSS while a busy container's network namespace holds N interfaces (bridges made from the
# host with nsenter), one container per N, on a private containerd 1.6 (docs/BENCHMARKS.md, "A network namespace
# with many interfaces"). Root; strace optional (counts the shim's reads of net/dev).
#
#   bench/netdev.sh SHIMDIR N...      e.g. bench/netdev.sh target/release 0 1000 2500
set -euo pipefail
shimdir=$(cd "${1:?usage: netdev.sh SHIMDIR N...}" && pwd); shift
cd "$(dirname "$0")/.."
dir=/tmp/nd-$$; ns=nd
cache=/var/cache/predictive-e2e; image=docker.io/predictive/busybox:latest
trap 'scripts/containerd-down.sh $dir >/dev/null 2>&1 || true' EXIT
scripts/containerd-up.sh "$dir" 1.6 "$shimdir" >/dev/null
. "$dir/env"
c() { "$CTR" -a "$CONTAINERD_SOCK" -n "$ns" "$@"; }
c images import "$cache/busybox-image.tar" >/dev/null
for n in "$@"; do
  c run -d --null-io --runtime io.containerd.predictive.v2 "$image" w$n sh -c 'while :; do i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; sleep 0.$((RANDOM % 9 + 1)); done'
  sleep 1
  pid=$(c t ls | awk -v id=w$n '$1==id {print $2}')
  if [ "$n" -gt 0 ]; then
    for ((i=0;i<n;i++)); do echo "link add b$i type bridge"; done > $dir/batch
    nsenter -t "$pid" -n ip -batch $dir/batch
  fi
  shim=$(pgrep -f "containerd-shim-predictive-v2 -namespace $ns -id w$n" | head -1)
  bytes=$(wc -c < /proc/$pid/net/dev)
  sleep 3
  t0=$(awk '{print $14+$15}' /proc/$shim/stat)
  sleep 30
  t1=$(awk '{print $14+$15}' /proc/$shim/stat)
  rss=$(awk '/VmRSS/ {print $2}' /proc/$shim/status)
  reads=n/a
  command -v strace >/dev/null && reads=$(timeout 3 strace -f -p $shim -e trace=pread64 2>&1 | grep -c "Inter-" || true)
  echo "N=$n net/dev=$bytes bytes: shim cpu $(( (t1-t0)*10 )) ms in 30 s, RSS $rss kB, net/dev preads in 3 s: $reads"
  c t kill -s KILL w$n >/dev/null; sleep 1; c c rm w$n >/dev/null 2>&1 || true
done
grep -h "network counters" $dir/containerd.log | cut -c1-200 || true
