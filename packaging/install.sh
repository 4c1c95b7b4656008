#!/usr/bin/env bash
# Installs (or with --uninstall removes) predictive from already-built release binaries:
#   $PREFIX/bin/{containerd-shim-predictive-v2,predictived,predictivectl}
#   $UNITDIR/predictived.service            (ExecStart pointing at $PREFIX/bin/predictived)
#   $SYSCONFDIR/predictive/predictived.toml  (kept if present: it may hold local changes)
#   $SYSCONFDIR/containerd/conf.d/predictive.toml (the containerd drop-in; kept if present): the version-3 one
#       (packaging/containerd/predictive-v3.toml) for containerd 2.x, the version-2 one (predictive.toml) for
#       1.6/1.7; picked from `containerd --version`, or CONTAINERD_CONFIG_VERSION=2|3; 3 when no containerd is found
#   $PREFIX/share/predictive/containerd/predictive-v{2,3}.toml (both drop-ins, for a later containerd upgrade)
# Everything under $DESTDIR (staging for packagers). Idempotent: running it twice changes nothing the second time.
#
# Variables: PREFIX (default /usr/local), DESTDIR (default empty), BINDIR (target/release),
#            SYSCONFDIR (/etc), UNITDIR ($PREFIX/lib/systemd/system; /lib/systemd/system when PREFIX=/usr),
#            CONTAINERD_CONFIG_VERSION (2 or 3; default: from `containerd --version`).
# It neither enables nor starts anything: `systemctl daemon-reload && systemctl enable --now predictived`, and
# restart containerd after adding the drop-in.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BINDIR=${BINDIR:-$root/target/release}
SYSCONFDIR=${SYSCONFDIR:-/etc}
if [ -z "${UNITDIR:-}" ]; then
    if [ "$PREFIX" = /usr ]; then UNITDIR=/lib/systemd/system; else UNITDIR=$PREFIX/lib/systemd/system; fi
fi
BINS=(containerd-shim-predictive-v2 predictived predictivectl)

usage() { echo "usage: [PREFIX=/usr/local] [DESTDIR=] $0 [--uninstall]" >&2; exit 2; }
mode=install
case "${1:-}" in
    "") ;;
    --uninstall) mode=uninstall ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument ${1:-}" >&2; usage ;;
esac
[ $# -le 1 ] || usage

bin_dst=$DESTDIR$PREFIX/bin
unit_dst=$DESTDIR$UNITDIR/predictived.service
conf_dst=$DESTDIR$SYSCONFDIR/predictive/predictived.toml
dropin_dst=$DESTDIR$SYSCONFDIR/containerd/conf.d/predictive.toml
share_dst=$DESTDIR$PREFIX/share/predictive/containerd
dropin_v2=$here/containerd/predictive.toml
dropin_v3=$here/containerd/predictive-v3.toml

# containerd's config version: 3 for containerd 2.x (which ignores a version-2 drop-in's CRI tables), 2 for 1.x.
case "${CONTAINERD_CONFIG_VERSION:-}" in
    2|3) config_version=$CONTAINERD_CONFIG_VERSION ;;
    "")
        case "$(containerd --version 2>/dev/null | grep -oE ' v?[0-9]+\.[0-9]+' | head -n1 | tr -d ' v')" in
            1.*) config_version=2 ;;
            *) config_version=3 ;;
        esac ;;
    *) echo "install.sh: CONTAINERD_CONFIG_VERSION must be 2 or 3, not $CONTAINERD_CONFIG_VERSION" >&2; exit 2 ;;
esac

# Copies $1 to $2 with mode $3 unless $2 already has that content and mode.
put() {
    local src=$1 dst=$2 mode=$3
    if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "$mode" ]; then
        echo "unchanged $dst"; return
    fi
    install -D -m "$mode" "$src" "$dst"
    echo "installed $dst"
}

# A configuration file: installed once, never overwritten (like a dpkg conffile the admin edited).
put_conf() {
    local src=$1 dst=$2
    if [ -e "$dst" ]; then
        if cmp -s "$src" "$dst"; then echo "unchanged $dst"; else echo "kept $dst (differs from $src: local changes)"; fi
        return
    fi
    install -D -m 0644 "$src" "$dst"
    echo "installed $dst"
}

if [ "$mode" = uninstall ]; then
    for b in "${BINS[@]}"; do
        if [ -e "$bin_dst/$b" ]; then rm -f "$bin_dst/$b"; echo "removed $bin_dst/$b"; fi
    done
    if [ -e "$unit_dst" ]; then rm -f "$unit_dst"; echo "removed $unit_dst"; fi
    # Configuration that is still the shipped default goes; an edited one stays.
    if [ -e "$conf_dst" ]; then
        if cmp -s "$here/predictived.toml" "$conf_dst"; then rm -f "$conf_dst"; echo "removed $conf_dst"
        else echo "kept $conf_dst (local changes)"; fi
    fi
    if [ -e "$dropin_dst" ]; then
        if cmp -s "$dropin_v2" "$dropin_dst" || cmp -s "$dropin_v3" "$dropin_dst"; then
            rm -f "$dropin_dst"; echo "removed $dropin_dst"
        else echo "kept $dropin_dst (local changes)"; fi
    fi
    for v in 2 3; do
        if [ -e "$share_dst/predictive-v$v.toml" ]; then rm -f "$share_dst/predictive-v$v.toml"; echo "removed $share_dst/predictive-v$v.toml"; fi
    done
    rmdir "$share_dst" "$(dirname "$share_dst")" "$DESTDIR$SYSCONFDIR/predictive" 2>/dev/null || true
    echo "uninstalled (state in /var/lib/predictive is kept)"
    exit 0
fi

for b in "${BINS[@]}"; do
    if [ ! -x "$BINDIR/$b" ]; then
        echo "install.sh: $BINDIR/$b is missing: run 'make build' first" >&2
        exit 1
    fi
done
for b in "${BINS[@]}"; do put "$BINDIR/$b" "$bin_dst/$b" 755; done

unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp"' EXIT
sed "s|^ExecStart=/usr/bin/predictived|ExecStart=$PREFIX/bin/predictived|" "$here/predictived.service" >"$unit_tmp"
put "$unit_tmp" "$unit_dst" 644
put_conf "$here/predictived.toml" "$conf_dst"
put "$dropin_v2" "$share_dst/predictive-v2.toml" 644
put "$dropin_v3" "$share_dst/predictive-v3.toml" 644
if [ "$config_version" = 3 ]; then put_conf "$dropin_v3" "$dropin_dst"; else put_conf "$dropin_v2" "$dropin_dst"; fi
if [ -z "$DESTDIR" ]; then
    echo "next: systemctl daemon-reload && systemctl enable --now predictived; restart containerd to load the drop-in"
fi
