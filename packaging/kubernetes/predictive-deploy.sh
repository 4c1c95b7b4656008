#!/bin/sh
# The node installer predictive-deploy.yaml runs (kata-deploy style), one pod per node:
#
#   predictive-deploy.sh install     copy the shim onto the node, add the `predictive` CRI runtime handler to
#                                    containerd's config, check it, write the broker's config if the node has none,
#                                    wait until the broker answers, restart containerd, then wait (the pod stays up)
#   predictive-deploy.sh broker      run predictived (the DaemonSet's second container) with the node's config,
#                                    on the host's /run/predictive and /var/lib/predictive
#   predictive-deploy.sh cleanup     undo all of it (the DaemonSet's preStop); the broker's store stays
#   predictive-deploy.sh prepare     install's file work only: shim, containerd config, broker config (no check,
#                                    no restart; tests/tests/kubernetes.rs runs it on a fake node)
#   predictive-deploy.sh wait-broker until the broker answers on the socket the node's config names (bounded)
#   predictive-deploy.sh configure | unconfigure    only the containerd config edit, no restart
#
# The broker: predictived runs in the DaemonSet's `predictived` container, so the first pod's Create finds it
# running; containerd is restarted with the handler only once it answers (at most BROKER_WAIT seconds, then the
# install goes on and shims fail open until it is up). The node's /etc/predictive/predictived.toml is written from
# the image's copy with `autostart = false` when there is none (an existing one is kept: set autostart = false in
# it, or a shim may start a broker of its own while the container restarts, which then holds the lock).
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
PREDICTIVED_CONF=${PREDICTIVED_CONF:-/etc/predictive/predictived.toml}
BROKER_TOML=${BROKER_TOML:-$ARTIFACTS/predictived.toml}  # packaging/predictived.toml
BROKER_WAIT=${BROKER_WAIT:-120}
SHIM=containerd-shim-predictive-v2
BEGIN="# BEGIN predictive-deploy (do not edit: predictive-deploy.sh cleanup removes it)"
END="# END predictive-deploy"

conf=$HOST_ROOT$CONTAINERD_CONF
confd=$(dirname "$conf")/conf.d
broker_conf=$HOST_ROOT$PREDICTIVED_CONF
BROKER_MARK="# Written by predictive-deploy.sh: its cleanup removes this file unless this line is deleted"

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

install_shim() {
    mkdir -p "$HOST_ROOT$HOST_BIN_DIR"
    cp "$ARTIFACTS/bin/$SHIM" "$HOST_ROOT$HOST_BIN_DIR/.$SHIM.new"
    chmod 755 "$HOST_ROOT$HOST_BIN_DIR/.$SHIM.new"
    mv -f "$HOST_ROOT$HOST_BIN_DIR/.$SHIM.new" "$HOST_ROOT$HOST_BIN_DIR/$SHIM"
}

# The node's broker config: the image's with autostart = false (this DaemonSet runs the broker), unless the node
# has one. Safe to run from both containers at once (written to a temporary file, renamed only if still missing).
broker_config() {
    if [ -f "$broker_conf" ]; then
        grep -Eq '^[[:space:]]*autostart[[:space:]]*=[[:space:]]*false' "$broker_conf" ||
            log "$PREDICTIVED_CONF has no 'autostart = false': a shim may start its own broker while this one restarts"
        return 0
    fi
    [ -f "$BROKER_TOML" ] || { log "no broker config at $BROKER_TOML"; exit 1; }
    mkdir -p "$(dirname "$broker_conf")"
    { echo "$BROKER_MARK"; sed 's/^autostart = true$/autostart = false/' "$BROKER_TOML"; } > "$broker_conf.$$"
    if [ -f "$broker_conf" ]; then rm -f "$broker_conf.$$"; else mv "$broker_conf.$$" "$broker_conf"; fi
    log "wrote $PREDICTIVED_CONF (autostart = false: the DaemonSet runs the broker)"
}

# The socket the node's broker config names (the default when it names none).
broker_socket() {
    s=$(sed -n 's/^[[:space:]]*socket[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$broker_conf" 2>/dev/null | head -n 1)
    echo "${s:-/run/predictive/broker.sock}"
}

wait_broker() {
    sock=$(broker_socket)
    i=0
    until "$ARTIFACTS/bin/predictivectl" --socket "$sock" --timeout 2 status >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -ge "$BROKER_WAIT" ]; then
            log "no broker answered on $sock after ${BROKER_WAIT}s: going on (shims fail open until it is up)"
            return 0
        fi
        sleep 1
    done
    log "the broker answers on $sock"
}

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
        install_shim
        configure
        check_config
        broker_config
        wait_broker
        restart_containerd
        log "installed on ${NODE_NAME:-this node}; waiting"
        trap 'exit 0' TERM INT
        while :; do sleep 3600 & wait $!; done
        ;;
    broker)
        broker_config
        exec "$ARTIFACTS/bin/predictived" --config "$broker_conf"
        ;;
    cleanup)
        unconfigure
        restart_containerd
        rm -f "$HOST_ROOT$HOST_BIN_DIR/$SHIM"
        # Ours (its first line is still the mark): removed; the store in /var/lib/predictive stays.
        if [ -f "$broker_conf" ] && [ "$(head -n 1 "$broker_conf")" = "$BROKER_MARK" ]; then rm -f "$broker_conf"; fi
        ;;
    prepare) install_shim; configure; broker_config ;;
    wait-broker) wait_broker ;;
    configure) configure ;;
    unconfigure) unconfigure ;;
    *) echo "usage: predictive-deploy.sh install|broker|cleanup|prepare|wait-broker|configure|unconfigure" >&2; exit 2 ;;
esac
