#!/bin/sh
# The node installer predictive-deploy.yaml runs (kata-deploy style), one pod per node:
#
#   predictive-deploy.sh install     copy the shim onto the node, add the `predictive` CRI runtime handler to
#                                    containerd's config, check it, restart containerd, then wait (the pod stays up)
#   predictive-deploy.sh cleanup     undo all of it (the DaemonSet's preStop)
#   predictive-deploy.sh configure | unconfigure    only the config edit, no restart (tests/tests/kubernetes.rs)
#
# The host's files are reached under $HOST_ROOT (default /host, where the DaemonSet mounts them); containerd is
# restarted in the host's namespaces with nsenter (the pod has hostPID and is privileged).
#
# containerd 2.x (config version 3): predictive-v3.toml goes to /etc/containerd/conf.d/predictive.toml, imported
# by config.toml (an imports line is added if it is missing; 2.x ignores the CRI tables of a version-2 drop-in
# under a version-3 config). containerd 1.6/1.7 (version 2): an imported file would
# replace config.toml's whole CRI section, so the drop-in's runtime tables are pasted into config.toml between
# marker lines instead (and the runc table only if config.toml names no runc runtime). A backup of config.toml is
# kept next to it; a config containerd rejects is rolled back before any restart.
set -eu

HOST_ROOT=${HOST_ROOT:-/host}
HOST_BIN_DIR=${HOST_BIN_DIR:-/usr/local/bin}
CONTAINERD_CONF=${CONTAINERD_CONF:-/etc/containerd/config.toml}
ARTIFACTS=${ARTIFACTS:-/opt/predictive-deploy}
DROPIN=${DROPIN:-$ARTIFACTS/predictive.toml}          # packaging/containerd/predictive.toml (version 2)
DROPIN_V3=${DROPIN_V3:-$ARTIFACTS/predictive-v3.toml}  # packaging/containerd/predictive-v3.toml (version 3)
SHIM=containerd-shim-predictive-v2
BEGIN="# BEGIN predictive-deploy (do not edit: predictive-deploy.sh cleanup removes it)"
END="# END predictive-deploy"

conf=$HOST_ROOT$CONTAINERD_CONF
confd=$(dirname "$conf")/conf.d

log() { echo "predictive-deploy: $*" >&2; }

# On the host: `host CMD...` (nsenter into PID 1's namespaces), or plainly when HOST_ROOT is / (tests).
host() {
    if [ "$HOST_ROOT" = / ]; then "$@"; else nsenter -t 1 -m -u -i -n -p -- "$@"; fi
}

config_version() {
    if [ -f "$conf" ] && grep -Eq '^[[:space:]]*version[[:space:]]*=[[:space:]]*3' "$conf"; then echo 3; return; fi
    if [ -f "$conf" ] && grep -Eq '^[[:space:]]*version[[:space:]]*=' "$conf"; then echo 2; return; fi
    # No config file (or no version line): what the host's containerd speaks.
    case $(host containerd --version 2>/dev/null | awk '{print $3}') in
        v2.*|2.*) echo 3 ;;
        *) echo 2 ;;
    esac
}

# The drop-in's TOML tables, without comments and the version line.
tables() { grep -v -e '^[[:space:]]*#' -e '^version' "$DROPIN"; }

configure() {
    [ -f "$DROPIN" ] && [ -f "$DROPIN_V3" ] || { log "no drop-in at $DROPIN / $DROPIN_V3"; exit 1; }
    mkdir -p "$(dirname "$conf")"
    [ -f "$conf" ] || printf 'version = %s\n' "$(config_version)" > "$conf"
    [ -f "$conf.predictive-bak" ] || cp -p "$conf" "$conf.predictive-bak"
    unconfigure_quiet
    if [ "$(config_version)" = 3 ]; then
        mkdir -p "$confd"
        cp "$DROPIN_V3" "$confd/predictive.toml"
        if ! grep -q 'conf\.d/\*\.toml' "$conf"; then
            if grep -Eq '^[[:space:]]*imports[[:space:]]*=' "$conf"; then
                log "$CONTAINERD_CONF has an imports line without /etc/containerd/conf.d/*.toml: add it"; exit 1
            fi
            # Top-level keys must come before the first table.
            awk -v line="$BEGIN
imports = [\"/etc/containerd/conf.d/*.toml\"]
$END" 'done == 0 && (/^[[:space:]]*\[/) { print line; done = 1 } { print } END { if (!done) print line }' \
                "$conf" > "$conf.new" && mv "$conf.new" "$conf"
        fi
    else
        {
            echo "$BEGIN"
            if grep -q 'containerd\.runtimes\.runc\]' "$conf"; then
                # config.toml has its own runc table (with its options): keep it, add only ours.
                tables | awk '/^\[/ { keep = ($0 !~ /runtimes\.runc\]/) } keep'
            else
                tables
            fi
            echo "$END"
        } >> "$conf"
    fi
    log "configured $CONTAINERD_CONF (config version $(config_version))"
}

unconfigure_quiet() {
    if [ -f "$conf" ]; then
        awk -v b="$BEGIN" -v e="$END" '$0 == b { skip = 1; next } $0 == e { skip = 0; next } !skip' "$conf" > "$conf.new"
        mv "$conf.new" "$conf"
    fi
    rm -f "$confd/predictive.toml"
}

unconfigure() { unconfigure_quiet; log "removed the predictive handler from $CONTAINERD_CONF"; }

# containerd must accept the edited config before it is restarted with it.
check_config() {
    if ! host containerd --config "$CONTAINERD_CONF" config dump >/dev/null 2>&1; then
        log "containerd rejects the edited $CONTAINERD_CONF; restoring the backup"
        cp -p "$conf.predictive-bak" "$conf"; rm -f "$confd/predictive.toml"; exit 1
    fi
}

restart_containerd() {
    host systemctl restart containerd
    i=0
    until host ctr version >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 60 ] || { log "containerd did not come back"; exit 1; }; sleep 1
    done
    log "containerd restarted"
}

case ${1:-} in
    install)
        mkdir -p "$HOST_ROOT$HOST_BIN_DIR"
        cp "$ARTIFACTS/bin/$SHIM" "$HOST_ROOT$HOST_BIN_DIR/.$SHIM.new"
        chmod 755 "$HOST_ROOT$HOST_BIN_DIR/.$SHIM.new"
        mv -f "$HOST_ROOT$HOST_BIN_DIR/.$SHIM.new" "$HOST_ROOT$HOST_BIN_DIR/$SHIM"
        configure
        check_config
        restart_containerd
        log "installed on ${NODE_NAME:-this node}; waiting"
        trap 'exit 0' TERM INT
        while :; do sleep 3600 & wait $!; done
        ;;
    cleanup)
        unconfigure
        restart_containerd
        rm -f "$HOST_ROOT$HOST_BIN_DIR/$SHIM"
        ;;
    configure) configure ;;
    unconfigure) unconfigure ;;
    *) echo "usage: predictive-deploy.sh install|cleanup|configure|unconfigure" >&2; exit 2 ;;
esac
