#!/usr/bin/env bash
# QEMU with a virtio-net served by vfio-user-server, its TAP in a network namespace of its own
# (vfu-demo, address 10.99.0.1/24), so the guest's traffic touches nothing else. As root.
#
#   examples/qemu-virtio-net.sh KERNEL [INITRD] [QEMU ARGS...]
#
# In the guest: ip addr add 10.99.0.2/24 dev eth0; ip link set eth0 up; ping 10.99.0.1
# From here:    ip netns exec vfu-demo ping 10.99.0.2
set -euo pipefail
kernel=${1:?usage: $0 KERNEL [INITRD] [QEMU ARGS...]}; shift
initrd=(); if [ $# -gt 0 ] && [ -f "$1" ]; then initrd=(-initrd "$1"); shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
server=${VFIO_USER_SERVER:-$here/.build/debug/vfio-user-server}
socket=${SOCKET:-/tmp/vfio-user-example-net.sock}
namespace=vfu-demo
accel=tcg; [ -w /dev/kvm ] && accel=kvm

ip netns add "$namespace"
trap 'kill $server_pid 2>/dev/null; ip netns del "$namespace"' EXIT
ip netns exec "$namespace" ip link set lo up
# The server creates the TAP (vtap0) inside the namespace it runs in.
ip netns exec "$namespace" "$server" --type virtio-net --tap vtap0 --mac 52:54:00:12:34:56 \
  --socket-path "$socket" --no-control &
server_pid=$!
for _ in $(seq 50); do ip netns exec "$namespace" ip link show vtap0 >/dev/null 2>&1 && break; sleep 0.1; done
ip netns exec "$namespace" ip addr add 10.99.0.1/24 dev vtap0
ip netns exec "$namespace" ip link set vtap0 up

"${QEMU:-qemu-system-x86_64}" -machine pc -accel "$accel" -m 512M \
  -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
  -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$socket\"}}" \
  -kernel "$kernel" "${initrd[@]}" -append 'console=ttyS0' -nographic "$@"
