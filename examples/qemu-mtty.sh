#!/usr/bin/env bash
# QEMU with an mtty-2 served by vfio-user-server: a dual 16550A serial card the guest's 8250 driver
# binds (ttyS4 and ttyS5 in a guest booted with 8250.nr_uarts=16).
#
#   examples/qemu-mtty.sh KERNEL [INITRD] [QEMU ARGS...]
#
# QEMU 10.1.1 or later; QEMU=/path/to/qemu-system-x86_64 to choose one. Guest RAM is a memfd so
# the server can map it (with plain -m everything works too, DMA then goes by messages).
set -euo pipefail
kernel=${1:?usage: $0 KERNEL [INITRD] [QEMU ARGS...]}; shift
initrd=(); if [ $# -gt 0 ] && [ -f "$1" ]; then initrd=(-initrd "$1"); shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
server=${VFIO_USER_SERVER:-$here/.build/debug/vfio-user-server}
socket=${SOCKET:-${XDG_RUNTIME_DIR:-/tmp}/vfio-user-example-mtty.sock}
accel=tcg; [ -w /dev/kvm ] && accel=kvm

"$server" --type mtty-2 --socket-path "$socket" --no-control &
server_pid=$!
trap 'kill $server_pid 2>/dev/null' EXIT
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done

"${QEMU:-qemu-system-x86_64}" -machine pc -accel "$accel" -m 512M \
  -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
  -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$socket\"}}" \
  -kernel "$kernel" "${initrd[@]}" -append 'console=ttyS0 8250.nr_uarts=16' -nographic "$@"
