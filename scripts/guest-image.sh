#!/usr/bin/env bash
# Build, once, the Debian 13 guest of the cgroup v2 test lane (scripts/guest-lane.sh): systemd as PID 1 with
# D-Bus, a pure cgroup v2 hierarchy with cpu/io/memory/pids delegated, kernel 6.12, containerd 1.7 and runc from
# Debian 13, busybox-static and stress-ng, the CRI client's python3-grpcio/protobuf. Prints the directory
# holding it:
#
#   DIR/rootfs/      the debootstrap tree (kept so a change of the set-up below does not re-download it)
#   DIR/disk.img     an ext4 image of it (3 GiB sparse); the lane boots it with snapshot=on, so it never changes
#   DIR/vmlinuz, DIR/initrd.img
#
# Cache: $PREDICTIVE_E2E_CACHE/guest-trixie-<hash of this script> (default /var/cache/predictive-e2e), so an
# edit of this file builds a new image. About 3 minutes and 600 MB of packages the first time; a no-op after.
# In the guest, predictive-guest.service (after local-fs and D-Bus) runs /usr/local/sbin/predictive-guest-run:
# it mounts the host's 9p shares `out` (results), `ws` (the workspace, at the path given by `predictive.ws=` on
# the kernel command line) and `cache` (this cache, at the same path), runs `$ws/scripts/guest-inside.sh` with
# its output on the serial console and in out/guest.log, and powers the guest off. Needs root, debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${PREDICTIVE_E2E_CACHE:-/var/cache/predictive-e2e}
hash=$(sha256sum "$0" | cut -c1-12)
dest=$cache/guest-trixie-$hash
mkdir -p "$cache"
exec 9>"$cache/.lock-guest"
flock -w 1800 9
if [ -f "$dest/.complete" ]; then echo "$dest"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "guest-image: building the guest needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "guest-image: debootstrap missing (scripts/deps.sh installs it)" >&2; exit 1; }

uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$uri" ] || uri=http://deb.debian.org/debian

start=$(date +%s)
tmp=$dest.tmp
root=$tmp/rootfs
# A debootstrap tree of an earlier version of this script is reused (the packages are the same); only the
# set-up below is done again.
prev=$(ls -d "$cache"/guest-trixie-*/rootfs 2>/dev/null | grep -v "^$dest" | head -n1 || true)
cleanup() { umount "$root/proc" 2>/dev/null || true; }
trap cleanup EXIT
rm -rf "$tmp"; mkdir -p "$tmp"
if [ -n "$prev" ] && [ -x "$prev/usr/bin/containerd" ]; then
    echo "guest-image: reusing the debootstrap tree $prev" >&2
    cp -a "$prev" "$root"
else
    echo "guest-image: debootstrap trixie from $uri ..." >&2
    # debootstrap resolves --include poorly (ABI-named libraries): the base goes first, the rest through apt.
    timeout 1800 debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,linux-image-amd64,udev,dbus,kmod,iproute2,procps,containerd,runc,busybox-static \
        trixie "$root" "$uri" >"$tmp/debootstrap.log" 2>&1 ||
        { tail -n 30 "$tmp/debootstrap.log" >&2; echo "guest-image: debootstrap failed" >&2; exit 1; }
    mount --bind /proc "$root/proc"
    DEBIAN_FRONTEND=noninteractive timeout 1200 chroot "$root" apt-get install -y -qq --no-install-recommends \
        stress-ng python3-grpcio python3-protobuf python3-yaml util-linux mount e2fsprogs >"$tmp/apt.log" 2>&1 ||
        { tail -n 30 "$tmp/apt.log" >&2; echo "guest-image: apt-get install in the guest failed" >&2; exit 1; }
    umount "$root/proc"
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*

echo /dev/vda / ext4 rw,noatime 0 1 > "$root/etc/fstab"
echo predictive-guest > "$root/etc/hostname"
mkdir -p "$root/usr/local/sbin"
cat > "$root/usr/local/sbin/predictive-guest-run" <<'EOF'
#!/bin/sh
# Mounts the host's 9p shares and runs the workspace's scripts/guest-inside.sh (see scripts/guest-image.sh).
ws=$(sed -n 's/.*predictive\.ws=\([^ ]*\).*/\1/p' /proc/cmdline)
o="trans=virtio,version=9p2000.L,msize=524288"
# share TAG DIR [OPTIONS]: mounts a 9p share, waiting up to 60 s for its device: under emulation the virtio
# devices are probed while this unit already runs ("9pnet_virtio: no channels available for device out", 2026-12-02).
share() {
    for _ in $(seq 60); do
        mount -t 9p -o "$o${3:+,$3}" "$1" "$2" 2>/dev/null && return 0
        sleep 1
    done
    mount -t 9p -o "$o${3:+,$3}" "$1" "$2"
}
mkdir -p /predictive-out
share out /predictive-out
if [ -n "$ws" ]; then
    mkdir -p "$ws" /var/cache/predictive-e2e
    # The workspace does not change while the guest runs: cache it (binaries exec from the page cache).
    share ws "$ws" cache=loose
    share cache /var/cache/predictive-e2e
    "$ws/scripts/guest-inside.sh" 2>&1 | tee /predictive-out/guest.log
else
    echo "guest: no predictive.ws= on the kernel command line" | tee /predictive-out/guest.log
fi
sync
systemctl poweroff --no-block
EOF
chmod 0755 "$root/usr/local/sbin/predictive-guest-run"
cat > "$root/etc/systemd/system/predictive-guest.service" <<'EOF'
[Unit]
Description=predictive: the cgroup v2 test lane
After=local-fs.target dbus.service
Wants=dbus.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/predictive-guest-run
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
EOF
# The tests start their own containerds; what systemd would start for a login or housekeeping only costs boot
# time under emulation. The serial getty would hang up the console the results are printed on.
SYSTEMD_OFFLINE=1 chroot "$root" systemctl enable predictive-guest.service >/dev/null 2>&1
SYSTEMD_OFFLINE=1 chroot "$root" systemctl mask serial-getty@ttyS0.service getty@tty1.service containerd.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer \
    systemd-timesyncd.service systemd-pstore.service >/dev/null 2>&1

cp "$root"/boot/vmlinuz-* "$tmp/vmlinuz"
cp "$root"/boot/initrd.img-* "$tmp/initrd.img"
truncate -s 3G "$tmp/disk.img"
mkfs.ext4 -q -F -L predictive -d "$root" "$tmp/disk.img"
rm -rf "$dest"; mv "$tmp" "$dest"
touch "$dest/.complete"
# Older images of this script are not needed any more (their debootstrap tree was copied above).
for old in "$cache"/guest-trixie-*; do
    [ "$old" = "$dest" ] || rm -rf "$old"
done
echo "guest-image: $dest in $(( $(date +%s) - start ))s ($(du -sh "$dest/disk.img" | cut -f1) used)" >&2
echo "$dest"
