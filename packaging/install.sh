#!/usr/bin/env bash
# Installs (or with --uninstall removes) predictive from already-built release binaries:
#   $PREFIX/bin/{containerd-shim-predictive-v2,predictived,predictivectl}
#   $UNITDIR/predictived.service            (ExecStart pointing at $PREFIX/bin/predictived)
#   $SYSCONFDIR/predictive/predictived.toml  (kept if present: it may hold local changes)
#   $SYSCONFDIR/containerd/conf.d/predictive.toml (the containerd drop-in; kept if present)
# Everything under $DESTDIR (staging for packagers). Idempotent: running it twice changes nothing the second time.
#
# Variables: PREFIX (default /usr/local), DESTDIR (default empty), BINDIR (target/release),
#            SYSCONFDIR (/etc), UNITDIR ($PREFIX/lib/systemd/system; /lib/systemd/system when PREFIX=/usr).
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
    for pair in "$here/predictived.toml:$conf_dst" "$here/containerd/predictive.toml:$dropin_dst"; do
        src=${pair%%:*} dst=${pair#*:}
        [ -e "$dst" ] || continue
        if cmp -s "$src" "$dst"; then rm -f "$dst"; echo "removed $dst"; else echo "kept $dst (local changes)"; fi
    done
    rmdir "$DESTDIR$SYSCONFDIR/predictive" 2>/dev/null || true
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
put_conf "$here/containerd/predictive.toml" "$dropin_dst"
if [ -z "$DESTDIR" ]; then
    echo "next: systemctl daemon-reload && systemctl enable --now predictived; restart containerd to load the drop-in"
fi
