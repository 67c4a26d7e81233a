#!/usr/bin/env bash
# End to end: QEMU attaches a virtio-net served by vfio-user-server with a TAP backend inside a
# network namespace made here. The guest's own virtio_net driver binds, the link comes up, the
# guest pings the namespace and pushes 10 MiB over TCP whose checksum must match on this side.
# MEMORY=anon runs it with plain guest RAM: every DMA then goes through DMA_READ/DMA_WRITE.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
e2e_setup "virtio-net-${MEMORY:-memfd}"
netns_create
server_start net.sock --type virtio-net --tap vtap0 --mac 52:54:00:e2:e0:01 ${SERVER_TRACE:+--trace}
for _ in $(seq 50); do in_netns ip link show vtap0 >/dev/null 2>&1 && break; sleep 0.1; done
in_netns ip addr add 10.99.0.1/24 dev vtap0
in_netns ip link set vtap0 up
# busybox nc stops at the end of its own stdin: give it a FIFO held open, which never ends.
mkfifo "$work/nc-input"
exec 7<>"$work/nc-input"
in_netns busybox nc -l -p 5000 < "$work/nc-input" > "$work/received" &
helper_pids+=($!)
e2e_boot virtio-net -device "$(device_json net.sock)"

expect '^E2E-DEVICE vendor=0x1af4 device=0x1041 class=0x020000 driver=virtio-pci' "the guest's virtio-pci binds 1af4:1041 class 0x020000"
expect '^E2E-IFACE eth[0-9]+ mac=52:54:00:e2:e0:01' "virtio_net made an interface with the device's MAC"
expect '^E2E-LINK up' "the link is up"
expect '^E2E-PING ok' "the guest pings the namespace's address through the TAP"
expect '^E2E-SENT ok' "the guest sent 10 MiB over TCP"
for _ in $(seq 50); do [ "$(stat -c %s "$work/received")" -ge 10485760 ] && break; sleep 0.1; done
sent=$(console_value E2E-MD5)
received=$(md5sum < "$work/received" | cut -d' ' -f1)
size=$(stat -c %s "$work/received")
[ "$size" -eq 10485760 ] || fail "received $size bytes, not 10485760"
[ "$sent" = "$received" ] || fail "checksum mismatch: guest sent $sent, namespace received $received"
log "ok: 10 MiB arrived intact (md5 $received)"
msix=$(grep '^E2E-INTR .*virtio[0-9]*-\(input\|output\)' "$work/console.log" | grep -c 'PCI-MSIX' || true)
[ "$msix" -ge 2 ] || fail "the queues did not use MSI-X interrupts: $(grep E2E-INTR "$work/console.log")"
grep '^E2E-INTR .*virtio[0-9]*-input' "$work/console.log" | awk '{ n = 0; for (i = 3; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; exit !(n > 0) }' \
  || fail "no receive interrupts counted"
log "ok: the guest's queues take MSI-X interrupts ($msix vectors)"
grep -q "E2E-FAILED" "$work/console.log" && fail "guest reported: $(grep E2E-FAILED "$work/console.log")"
server_stop
summary=$(grep "session summary" "$work/server-net.sock.log" | tail -1)
dma_messages=$(echo "$summary" | sed 's/.* \([0-9]*\) DMA messages sent.*/\1/')
maps_fd=$(echo "$summary" | sed 's/.* \([0-9]*\) DMA maps with an fd.*/\1/')
if [ "${MEMORY:-memfd}" = anon ]; then
  [ "$maps_fd" -eq 0 ] && [ "$dma_messages" -gt 1000 ] || fail "anonymous RAM should mean DMA by messages: $summary"
  grep -q "speaks the spec's DMA_READ/WRITE layout" "$work/server-net.sock.log" || fail "the DMA layout probe did not find the spec's layout"
  log "ok: every DMA went through messages ($dma_messages DMA_READ/DMA_WRITE; QEMU speaks the spec's layout)"
else
  [ "$maps_fd" -gt 0 ] && [ "$dma_messages" -eq 0 ] || fail "memfd RAM should mean DMA through mmap: $summary"
  log "ok: DMA went through mmapped guest memory ($maps_fd DMA maps with an fd, no DMA messages)"
fi
log "PASS"
