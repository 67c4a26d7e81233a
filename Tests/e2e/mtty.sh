#!/usr/bin/env bash
# End to end: QEMU attaches an mtty-2 served by vfio-user-server; the Linux guest's 8250 driver
# binds two 16550A ports at the two I/O BARs and loops bytes through each (interrupt-driven: INTx).
# MEMORY=anon runs it with plain guest RAM: QEMU's DMA maps then carry no fd (message mode).
# VIA=proxy puts `vfio-user-server proxy` between QEMU and the server: everything must still work,
# fds included. VIA=socat puts socat there instead: no fd passes, so no interrupt reaches QEMU,
# but the device must still attach and enumerate.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
via=${VIA:-direct}
e2e_setup "mtty-${MEMORY:-memfd}${VIA:+-via-$VIA}"
server_start mtty.sock --type mtty-2 --trace
attach=mtty.sock
if [ "$via" != direct ]; then relay_start "$via" relay.sock mtty.sock; attach=relay.sock; fi
[ "$via" = socat ] && GUEST_ARGS="${GUEST_ARGS:-} e2e.enumerate"
e2e_boot mtty -device "$(device_json $attach)"

if [ "$via" = socat ]; then
  check_mtty_enumerated
  grep -q "DEVICE_SET_IRQS" "$work/server-mtty.sock.log" && ! grep -q "DEVICE_SET_IRQS.*fds=" "$work/server-mtty.sock.log" \
    || fail "through socat no SET_IRQS should carry fds"
  log "ok: QEMU's SET_IRQS arrived without fds through socat, and the device attached anyway"
else
  check_mtty_guest
fi
check_guest_clean
if [ "$via" = proxy ]; then
  grep -q "→ #[0-9]* DEVICE_SET_IRQS .*fds=1" "$work/relay.log" || fail "the proxy log shows no SET_IRQS passing an fd"
  messages=$(grep -c "^[→←]" "$work/relay.log" || true)
  log "ok: the proxy relayed $messages messages, eventfds included"
fi
relay_stop
server_stop
log "ok: server exited 0 on SIGTERM and removed its socket"
summary=$(grep "session summary" "$work/server-mtty.sock.log" | tail -1)
with_fd=$(echo "$summary" | sed 's/.* \([0-9]*\) DMA maps with an fd.*/\1/')
without_fd=$(echo "$summary" | sed 's/.* \([0-9]*\) without.*/\1/')
! grep -q "DMA_MAP reply error" "$work/server-mtty.sock.log" || fail "a DMA_MAP was refused"
if [ "${MEMORY:-memfd}" = anon ] || [ "$via" = socat ]; then [ "$with_fd" -eq 0 ] && [ "$without_fd" -gt 0 ] || fail "anonymous RAM: $summary"
else [ "$with_fd" -gt 0 ] || fail "memfd RAM but no DMA_MAP carried an fd: $summary"; fi
log "ok: QEMU's DMA maps were all accepted ($with_fd with an fd, $without_fd without)"
# A fact about the client, not the server: does this QEMU drive vfio-user migration at all?
features=$(grep -c " DEVICE_FEATURE" "$work/server-mtty.sock.log" || true)
if [ "$features" -eq 0 ]; then log "note: QEMU sent no DEVICE_FEATURE: it does not drive vfio-user migration"
else log "note: QEMU sent $features DEVICE_FEATURE messages: it asks about migration"; fi
log "PASS"
