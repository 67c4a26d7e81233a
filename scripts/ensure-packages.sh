#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when they are missing.
# Usage: ensure-packages.sh [build|e2e]...
set -euo pipefail
want=()
for need in "$@"; do
  case $need in
    build) want+=(libjson-c-dev libpng-dev libseccomp-dev pkg-config socat xxd) ;; # socat and xxd: the examples the tests run
    e2e) want+=(debootstrap busybox-static cpio xz-utils iproute2 gcc systemd) ;; # systemd: systemd-analyze and systemd-socket-activate
  esac
done
missing=()
for package in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
