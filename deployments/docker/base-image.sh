#!/usr/bin/env bash
# Print the Python base image for service images, making sure the engine has it.
# 1. LIFECYCLE_BASE_IMAGE if set; 2. python:3.11-slim if present or pullable;
# 3. otherwise (no registry reachable) local/python:3.11-slim, built once from Debian
#    packages with debootstrap and imported into the engine (cached by tag).
set -euo pipefail
WANT="${LIFECYCLE_BASE_IMAGE:-}"
if [ -n "$WANT" ]; then echo "$WANT"; exit 0; fi
have() { docker image inspect "$1" >/dev/null 2>&1; }
if have python:3.11-slim || timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then
  echo python:3.11-slim; exit 0
fi
LOCAL=local/python:3.11-slim
if have "$LOCAL"; then echo "$LOCAL"; exit 0; fi

echo "building $LOCAL from Debian packages (once)" >&2
command -v debootstrap >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap) >&2
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /tmp/lifecycle-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,libgomp1 \
  bookworm "$ROOTFS" "$MIRROR" >/tmp/lifecycle-debootstrap.log 2>&1 || { tail -20 /tmp/lifecycle-debootstrap.log >&2; exit 1; }
# trust the same extra CAs as this machine (e.g. a TLS-intercepting proxy)
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
  chroot "$ROOTFS" update-ca-certificates >&2
fi
ln -sf python3 "$ROOTFS/usr/bin/python"
rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb
tar -C "$ROOTFS" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  -c 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
  -c 'CMD ["python3"]' - "$LOCAL" >&2
echo "$LOCAL"
