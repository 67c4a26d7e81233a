#!/usr/bin/env bash
# End to end: QEMU attaches an mtty-2 served by vfio-user-server; the Linux guest's 8250 driver
# binds two 16550A ports at the two I/O BARs and loops bytes through each (interrupt-driven: INTx).
# MEMORY=anon runs it with plain guest RAM: QEMU's DMA maps then carry no fd (message mode).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
e2e_setup "mtty-${MEMORY:-memfd}"
server_start mtty.sock --type mtty-2 --trace
e2e_boot mtty -device "$(device_json mtty.sock)"

check_mtty_guest
check_guest_clean
server_stop
log "ok: server exited 0 on SIGTERM and removed its socket"
summary=$(grep "session summary" "$work/server-mtty.sock.log" | tail -1)
with_fd=$(echo "$summary" | sed 's/.* \([0-9]*\) DMA maps with an fd.*/\1/')
without_fd=$(echo "$summary" | sed 's/.* \([0-9]*\) without.*/\1/')
! grep -q "DMA_MAP reply error" "$work/server-mtty.sock.log" || fail "a DMA_MAP was refused"
if [ "${MEMORY:-memfd}" = anon ]; then [ "$with_fd" -eq 0 ] && [ "$without_fd" -gt 0 ] || fail "anonymous RAM: $summary"
else [ "$with_fd" -gt 0 ] || fail "memfd RAM but no DMA_MAP carried an fd: $summary"; fi
log "ok: QEMU's DMA maps were all accepted ($with_fd with an fd, $without_fd without)"
# A fact about the client, not the server: does this QEMU drive vfio-user migration at all?
features=$(grep -c " DEVICE_FEATURE" "$work/server-mtty.sock.log" || true)
if [ "$features" -eq 0 ]; then log "note: QEMU sent no DEVICE_FEATURE: it does not drive vfio-user migration"
else log "note: QEMU sent $features DEVICE_FEATURE messages: it asks about migration"; fi
log "PASS"
