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
tap_peer_setup
e2e_boot virtio-net -device "$(device_json net.sock)"

check_virtio_net_guest 52:54:00:e2:e0:01
check_guest_clean
server_stop
summary=$(grep "session summary" "$work/server-net.sock.log" | tail -1)
dma_messages=$(echo "$summary" | sed 's/.* \([0-9]*\) DMA messages sent.*/\1/')
maps_fd=$(echo "$summary" | sed 's/.* \([0-9]*\) DMA maps with an fd.*/\1/')
# The guest's negotiated features, one character per bit: bit 28 is VIRTIO_RING_F_INDIRECT_DESC.
indirect=$(console_value E2E-FEATURES | cut -c29)
if [ "${MEMORY:-memfd}" = anon ]; then
  [ "$maps_fd" -eq 0 ] && [ "$dma_messages" -gt 1000 ] || fail "anonymous RAM should mean DMA by messages: $summary"
  grep -q "speaks the spec's DMA_READ/WRITE layout" "$work/server-net.sock.log" || fail "the DMA layout probe did not find the spec's layout"
  log "ok: every DMA went through messages ($dma_messages DMA_READ/DMA_WRITE; QEMU speaks the spec's layout)"
  [ "$(grep -c "without an fd.*share=on" "$work/server-net.sock.log")" -eq 1 ] || fail "the server did not say once what RAM without fds costs"
  [ "$indirect" = 0 ] || fail "the guest's driver uses indirect tables with RAM reached by messages (features $(console_value E2E-FEATURES))"
  log "ok: no indirect tables offered with RAM reached by messages"
else
  [ "$maps_fd" -gt 0 ] && [ "$dma_messages" -eq 0 ] || fail "memfd RAM should mean DMA through mmap: $summary"
  ! grep -q "without an fd" "$work/server-net.sock.log" || fail "a warning about RAM without fds, with shared RAM (QEMU's ROMs are read-only)"
  [ "$indirect" = 1 ] || fail "the guest's driver did not take indirect tables with mapped RAM (features $(console_value E2E-FEATURES))"
  log "ok: DMA went through mmapped guest memory ($maps_fd DMA maps with an fd, no DMA messages)"
fi
log "PASS"
