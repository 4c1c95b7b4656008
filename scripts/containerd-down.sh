#!/usr/bin/env bash
# Stop a private containerd started by containerd-up.sh, after removing every task and container
# it still has (so its shims exit), then unmount anything left under DIR.
#
#   scripts/containerd-down.sh DIR [--keep]     (--keep: leave DIR on disk)
set -uo pipefail
dir=${1:?usage: containerd-down.sh DIR [--keep]}
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd)
[ -f "$dir/env" ] && . "$dir/env"
sock=$dir/containerd.sock
pid=$(cat "$dir/containerd.pid" 2>/dev/null || true)

if [ -n "${CTR:-}" ] && [ -S "$sock" ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    for ns in $(timeout 10 "$CTR" -a "$sock" ns ls -q 2>/dev/null); do
        for t in $(timeout 10 "$CTR" -a "$sock" -n "$ns" t ls -q 2>/dev/null); do
            timeout 20 "$CTR" -a "$sock" -n "$ns" t rm -f "$t" >/dev/null 2>&1 || true
        done
        for c in $(timeout 10 "$CTR" -a "$sock" -n "$ns" c ls -q 2>/dev/null); do
            timeout 20 "$CTR" -a "$sock" -n "$ns" c rm "$c" >/dev/null 2>&1 || true
        done
    done
fi

if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
fi

# Shims of this containerd carry its socket in their command line; give them a moment, then end them.
shims() { for p in /proc/[0-9]*; do
    if { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | grep -q -- "-address $sock"; then echo "${p#/proc/}"; fi
done; }
for _ in $(seq 1 30); do [ -z "$(shims)" ] && break; sleep 0.1; done
for s in $(shims); do echo "containerd-down: killing leftover shim $s" >&2; kill -KILL "$s" 2>/dev/null; done

# The broker a shim started for this containerd (its pid is in the lock file).
bpid=$(cat "$dir/broker/predictived.lock" 2>/dev/null || true)
if [ -n "$bpid" ] && grep -q predictived "/proc/$bpid/cmdline" 2>/dev/null; then
    kill -TERM "$bpid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$bpid" 2>/dev/null || true
fi

# Unmount whatever is still mounted under DIR, deepest first.
awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
done
[ "${2:-}" = --keep ] || rm -rf "$dir"
