#!/usr/bin/env bash
# Builds (once) a Debian trixie tree holding QEMU >= 10.1.1 from trixie-backports and the guest kernel,
# because the host is bookworm, whose own QEMU has no vfio-user-pci.
# Usage: qemu-root.sh [DIR]   (default: $VFIO_USER_E2E_ROOT or /var/cache/vfio-user-swift/trixie)
# Prints the directory on success. Safe to run again: a finished tree is reused.
set -euo pipefail
dir=${1:-${VFIO_USER_E2E_ROOT:-/var/cache/vfio-user-swift/trixie}}
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}

if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
need=()
for tool in debootstrap:debootstrap busybox:busybox-static cpio:cpio xz:xz-utils; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
rm -rf "$dir"; mkdir -p "$dir"
debootstrap --variant=minbase trixie "$dir" "$mirror" >&2
cat > "$dir/etc/apt/sources.list.d/backports.sources" <<SRC
Types: deb
URIs: $mirror
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
chroot "$dir" apt-get update -qq >&2
chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -t trixie-backports qemu-system-x86 >&2
chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  linux-image-amd64 >&2
chroot "$dir" apt-get clean
version=$(chroot "$dir" qemu-system-x86_64 --version | head -1)
echo "$version" >&2
touch "$dir/.complete"
echo "$dir"
