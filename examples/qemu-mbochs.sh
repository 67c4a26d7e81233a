#!/usr/bin/env bash
# QEMU with an mbochs-medium served by vfio-user-server: a display the guest's bochs DRM driver
# binds (1234:1111); QEMU maps its framebuffer into the guest. QEMU shows nothing of it (vfio-user
# has no display plane): take screenshots from the server, as printed below.
#
#   examples/qemu-mbochs.sh KERNEL [INITRD] [QEMU ARGS...]
#
# QEMU 10.1.1 or later; QEMU=/path/to/qemu-system-x86_64 to choose one. The guest needs the bochs
# module (drivers/gpu/drm/tiny/bochs.ko and the DRM modules it depends on).
set -euo pipefail
kernel=${1:?usage: $0 KERNEL [INITRD] [QEMU ARGS...]}; shift
initrd=(); if [ $# -gt 0 ] && [ -f "$1" ]; then initrd=(-initrd "$1"); shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
server=${VFIO_USER_SERVER:-$here/.build/debug/vfio-user-server}
directory=${XDG_RUNTIME_DIR:-/tmp}/vfio-user-example-mbochs
uuid=83b8f4f2-509f-382f-3c1e-e6bfe0fa1004
accel=tcg; [ -w /dev/kvm ] && accel=kvm

mkdir -p "$directory"
"$server" --type mbochs-medium --uuid $uuid --socket-path "$directory/fb.sock" \
  --socket-dir "$directory" --control "$directory/control.sock" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null' EXIT
for _ in $(seq 50); do [ -S "$directory/fb.sock" ] && break; sleep 0.1; done
echo "screenshots: $server screenshot --uuid $uuid --control $directory/control.sock --output screen.png" >&2

"${QEMU:-qemu-system-x86_64}" -machine pc -accel "$accel" -m 512M -vga none \
  -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
  -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$directory/fb.sock\"}}" \
  -kernel "$kernel" "${initrd[@]}" -append 'console=ttyS0' -nographic "$@"
