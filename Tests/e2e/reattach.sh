#!/usr/bin/env bash
# End to end, a hypervisor that dies: QEMU attaches an mtty-2 and a virtio-net (two instances of one
# server), the guest keeps bytes looping through both serial ports and frames flowing through the
# TAP, and QEMU is killed with SIGKILL in the middle of it. The server must keep running, end both
# sessions and keep nothing of them (no fd, no mapping of guest memory), and keep both instances
# listening; a second QEMU attaching the same sockets gets working devices: the full mtty and
# virtio-net checks pass in its guest.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
e2e_setup "reattach-${MEMORY:-memfd}"
netns_create
manager_start ${SERVER_TRACE:+--trace}
server=${server_pids[0]}
serial=6a1e0c52-93d4-4f0e-8b7a-3c2d1e0f9a01
mac=52:54:00:e2:e0:03
ctl start --type mtty-2 --uuid "$serial" >/dev/null
nic=$(ctl start --type virtio-net --param tap=vtap0 --param mac=$mac --json | sed -n 's/^{"uuid":"\([0-9a-f-]*\)".*/\1/p')
[ -n "$nic" ] || fail "start printed no UUID for the virtio-net"
tap_peer_setup
# The busy guest streams to port 5001; whatever reaches it is thrown away (stdin: tap_peer_setup's
# FIFO, which never ends).
in_netns busybox nc -l -p 5001 < "$work/nc-input" > /dev/null &
helper_pids+=($!)

fds() { fd_count "$server"; }
guest_mappings() { guest_memory_mappings "$server"; }
sessions_in() { ctl list --json | grep -o "\"state\":\"$1\"" | wc -l; }
fds_idle=$(fds)

e2e_boot_background busy -device "$(device_json "$serial.sock")" -device "$(device_json "$nic.sock")"
console_wait "^E2E-BUSY " "$E2E_TIMEOUT"
grep -q "^E2E-BUSY .*flowing=yes" "$work/console.log" || fail "traffic did not flow: $(grep E2E-BUSY "$work/console.log")"
log "ok: the guest keeps serial bytes and frames flowing: $(grep E2E-BUSY "$work/console.log" | tr -d '\r')"
[ "$(sessions_in attached)" -eq 2 ] || fail "not both attached: $(ctl list --json)"
if [ "${MEMORY:-memfd}" = memfd ]; then
  [ "$(guest_mappings)" -gt 0 ] || fail "the server maps no guest memory while attached"
fi
sleep 2
kill -KILL "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
log "killed QEMU ($qemu_pid) with SIGKILL mid-traffic"

for _ in $(seq 50); do [ "$(sessions_in idle)" -eq 2 ] && break; sleep 0.1; done
kill -0 "$server" 2>/dev/null || fail "the server died with QEMU"
[ "$(sessions_in idle)" -eq 2 ] || fail "the sessions did not end: $(ctl list --json)"
[ -S "$work/$serial.sock" ] && [ -S "$work/$nic.sock" ] || fail "an instance socket is gone"
for _ in $(seq 50); do [ "$(fds)" -eq "$fds_idle" ] && break; sleep 0.1; done
[ "$(fds)" -eq "$fds_idle" ] || fail "the server holds $(fds) fds, $fds_idle before QEMU came: $(for pid in $(serving_pids "$server"); do ls -l "/proc/$pid/fd"; done)"
[ "$(guest_mappings)" -eq 0 ] || fail "the server still maps guest memory: $(for pid in $(serving_pids "$server"); do grep memfd: "/proc/$pid/maps"; done)"
log "ok: the server ended both sessions and kept nothing: $fds_idle fds as before QEMU came, no guest memory mapped"

mv "$work/console.log" "$work/console-killed.log"
e2e_boot mdev -device "$(device_json "$serial.sock")" -device "$(device_json "$nic.sock")"
check_mtty_guest
check_virtio_net_guest $mac
check_guest_clean
log "ok: a new QEMU attached the same two instances and the guest drove both"
for _ in $(seq 50); do [ "$(sessions_in idle)" -eq 2 ] && break; sleep 0.1; done
[ "$(ctl list --json | grep -o '"sessions":2' | wc -l)" -eq 2 ] || fail "list after the second guest: $(ctl list --json)"
[ "$(fds)" -eq "$fds_idle" ] || fail "the server holds $(fds) fds after the second guest, $fds_idle before"
log "ok: two sessions counted on each instance, fds back to $fds_idle"
ctl stop --uuid "$serial" >/dev/null && ctl stop --uuid "$nic" >/dev/null
server_stop
log "PASS"
