#!/usr/bin/env bash
# End to end, the mdev model: one server process starts with no device; an mtty-2, a virtio-net
# and an mbochs-medium are created through its control socket (`vfio-user-server start`), and one
# QEMU guest attaches all three and drives each with its stock driver. While the guest runs, `list`
# shows them attached and `stop` of an attached instance is refused; afterwards all are stopped,
# their sockets go, and `types` counts every instance available again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
e2e_setup "mdev-${MEMORY:-memfd}"
netns_create
manager_start ${SERVER_TRACE:+--trace}
serial=0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c01
mac=52:54:00:e2:e0:02
ctl start --type mtty-2 --uuid "$serial" >/dev/null
nic=$(ctl start --type virtio-net --param tap=vtap0 --param mac=$mac --json | sed -n 's/^{"uuid":"\([0-9a-f-]*\)".*/\1/p')
[ -n "$nic" ] || fail "start printed no UUID for the virtio-net"
display=0f3c5d2e-7a41-4c1b-9d0e-2b6a8f4e1c03
ctl start --type mbochs-medium --uuid "$display" >/dev/null
log "ok: created mtty-2 $serial, virtio-net $nic and mbochs-medium $display through the control socket"
available() { ctl types --json | grep -o "\"id\":\"$1\",[^}]*\"available_instances\":[0-9]*" | sed 's/.*://'; }
[ "$(available mtty-2)" = 11 ] && [ "$(available mtty-1)" = 22 ] && [ "$(available virtio-net)" = 63 ] \
  && [ "$(available mbochs-medium)" = 15 ] && [ "$(available mbochs-small)" = 60 ] \
  || fail "types after three starts: $(ctl types --json)"
log "ok: types counts them (mtty-2 11, mtty-1 22, virtio-net 63, mbochs-medium 15, mbochs-small 60 available)"
tap_peer_setup
display_screenshots_setup "$display" "$work/control.sock"

# While the guest runs: watch `list` until both are attached, then try to stop one.
(
  while [ ! -e "$work/guest-done" ]; do
    if [ "$(ctl list --json | grep -o '"state":"attached"' | wc -l)" -eq 3 ]; then
      echo "all attached" >> "$work/watch.log"
      if ctl stop --uuid "$serial" 2>> "$work/watch.log"; then echo "stop succeeded" >> "$work/watch.log"; fi
      break
    fi
    sleep 0.3
  done
) &
watcher=$!
e2e_boot mdev -device "$(device_json "$serial.sock")" -device "$(device_json "$nic.sock")" -device "$(device_json "$display.sock")"
touch "$work/guest-done"
wait $watcher || true

check_mtty_guest
check_virtio_net_guest $mac
check_mbochs_guest 1024 768
check_guest_clean
grep -q "all attached" "$work/watch.log" 2>/dev/null || fail "list never showed the three instances attached"
grep -q "EBUSY" "$work/watch.log" && ! grep -q "stop succeeded" "$work/watch.log" \
  || fail "stopping an attached instance was not refused: $(cat "$work/watch.log")"
log "ok: while the guest ran, list showed all three attached and stop was refused (EBUSY)"

for _ in $(seq 50); do [ "$(ctl list --json | grep -o '"state":"idle"' | wc -l)" -eq 3 ] && break; sleep 0.1; done
[ "$(ctl list --json | grep -o '"sessions":1' | wc -l)" -eq 3 ] || fail "list after the guest: $(ctl list --json)"
for uuid in "$serial" "$nic" "$display"; do
  ctl stop --uuid "$uuid" | grep -q "client: no-client" || fail "stop $uuid"
  [ ! -e "$work/$uuid.sock" ] || fail "the socket of $uuid is left after stop"
done
[ "$(available mtty-2)" = 12 ] && [ "$(available virtio-net)" = 64 ] && [ "$(available mbochs-medium)" = 16 ] \
  || fail "types after stop: $(ctl types --json)"
log "ok: all three stopped, their sockets removed, every instance available again"
server_stop
log "ok: server exited 0 on SIGTERM and removed its control socket"
log "PASS"
