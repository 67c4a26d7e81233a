#!/usr/bin/env bash
# End to end, hot-plug: a guest boots without the device; QEMU adds the mtty-2 (QMP device_add),
# the guest's ACPI hot-plug finds it and its 8250 driver loops a line through each port, then QEMU
# removes it (device_del: the guest ejects it, QEMU closes the connection), round after round on
# the same socket. Each round must be a new session of the same instance, never refused, and the
# server must end each one and keep nothing of it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${ROUNDS:-3}
e2e_setup hotplug
server_start mtty.sock --type mtty-2
server=${server_pids[0]}
fds() { ls "/proc/$server/fd" | wc -l; }
fds_idle=$(fds)
qmp() { printf '{"execute":"qmp_capabilities"}\n%s\n' "$1" | socat -t 5 - "UNIX-CONNECT:$work/qmp.sock"; }
detached() { grep -c "client detached" "$work/server-mtty.sock.log" || true; }

GUEST_ARGS="e2e.rounds=$rounds" e2e_boot_background hotplug -qmp "unix:$guest_dir/qmp.sock,server=on,wait=off"
console_wait "^E2E-HOTPLUG-READY" "$E2E_TIMEOUT"
for n in $(seq "$rounds"); do
  reply=$(qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"vfio-user-pci\",\"id\":\"mtty$n\",\"socket\":{\"type\":\"unix\",\"path\":\"$guest_dir/mtty.sock\"}}}")
  echo "$reply" | grep -q '"error"' && fail "round $n: device_add: $reply"
  console_wait "^E2E-HOTPLUG-UP $n " 120
  line=$(grep "^E2E-HOTPLUG-UP $n " "$work/console.log" | tr -d '\r')
  echo "$line" | grep -q "ports=2 looped=2" || fail "round $n: the guest did not drive both ports: $line"
  log "ok: round $n: the guest found the hot-added device and looped a line through both ports ($line)"
  reply=$(qmp "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"mtty$n\"}}")
  echo "$reply" | grep -q '"error"' && fail "round $n: device_del: $reply"
  console_wait "^E2E-HOTPLUG-DOWN $n gone" 120
  # No wait for the server here: the next device_add may reach it while this session still ends.
  log "ok: round $n: the guest ejected the device"
done
console_wait "^E2E-DONE" 60
wait "$qemu_pid" 2>/dev/null || true
check_guest_clean
for _ in $(seq 100); do [ "$(detached)" -eq "$rounds" ] && [ "$(fds)" -eq "$fds_idle" ] && break; sleep 0.1; done
! grep -q "refused a client" "$work/server-mtty.sock.log" || fail "a hot-add was refused: $(grep refused "$work/server-mtty.sock.log")"
[ "$(grep -c "client attached" "$work/server-mtty.sock.log")" -eq "$rounds" ] || fail "expected $rounds sessions"
[ "$(detached)" -eq "$rounds" ] || fail "the server saw $(detached) of $rounds sessions end"
[ "$(fds)" -eq "$fds_idle" ] || fail "the server holds $(fds) fds, $fds_idle before QEMU came"
log "ok: $rounds hot-plug rounds, $rounds sessions, none refused, all ended; $fds_idle fds as before QEMU came"
server_stop
log "PASS"
