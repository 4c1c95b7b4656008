#!/usr/bin/env bash
# Build a busybox-static rootfs and an OCI image tar from it, with no registry:
# oci-layout + index.json + blobs/sha256/* + a Docker manifest.json, so the same file imports with
# `ctr images import`, `ctr -n k8s.io images import` and `docker load`.
#
#   scripts/make-image.sh OUT.tar [NAME [CMD]]   NAME default: docker.io/predictive/busybox:latest
#                                                CMD: the image's Cmd as a JSON array (default ["/bin/sh"]);
#                                                the CRI test's pause image is ["sleep","2147483647"]
#
# Deterministic (fixed mtimes and owners): the same busybox gives the same digest.
set -euo pipefail
out=${1:?usage: make-image.sh OUT.tar [NAME [CMD]]}
name=${2:-docker.io/predictive/busybox:latest}
cmd_json=${3:-'["/bin/sh"]'}
bb=$(command -v busybox || true)
[ -n "$bb" ] || { echo "make-image: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
file -L "$bb" 2>/dev/null | grep -q 'dynamically' && { echo "make-image: $bb is not static" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/make-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,var/tmp,run,home}
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
cp "$bb" "$rootfs/bin/busybox"
for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
printf 'hosts: files\n' > "$rootfs/etc/nsswitch.conf"
: > "$rootfs/etc/hosts"; : > "$rootfs/etc/resolv.conf"

oci=$work/oci
mkdir -p "$oci/blobs/sha256"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$rootfs" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -c "$work/layer.tar" > "$work/layer.tar.gz"
layer=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$oci/blobs/sha256/$layer"

cat > "$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":$cmd_json,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/make-image.sh (busybox-static)"}]}
JSON
config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
config_size=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$oci/blobs/sha256/$config"

cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$layer_size}]}
JSON
manifest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
manifest_size=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$oci/blobs/sha256/$manifest"

tag=${name##*:}
printf '{"imageLayoutVersion":"1.0.0"}' > "$oci/oci-layout"
cat > "$oci/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$manifest_size,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"$tag"}}]}
JSON
# Docker's loader (and containerd's docker-archive path) read this one.
short=${name#docker.io/}; short=${short#library/}
cat > "$oci/manifest.json" <<JSON
[{"Config":"blobs/sha256/$config","RepoTags":["$short"],"Layers":["blobs/sha256/$layer"]}]
JSON

mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$oci" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
