#!/usr/bin/env bash
# End to end, hot-plug: a guest boots without devices; QEMU adds an mtty-2 and a virtio-net (QMP
# device_add), the guest's ACPI hot-plug finds them, its 8250 driver loops a line through each
# serial port and its virtio_net pings the test's namespace through the TAP; then QEMU removes both
# (device_del: the guest ejects them, QEMU closes the connections). Round after round on the same
# two instances: each round must be a new session of each, never refused, and the server must end
# each one and keep nothing of it. The NIC runs with msix=off (INTx): QEMU 11.1 aborts when a
# vfio-user device with MSI-X is hot-unplugged (an assertion in its PBA teardown; see README).
# DEVICES=mtty or DEVICES=net runs one kind alone.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${ROUNDS:-3}
devices=${DEVICES:-mtty,net}
sessions=$(( rounds * $(echo "$devices" | tr ',' '\n' | wc -l) ))
e2e_setup "hotplug-${MEMORY:-memfd}"
netns_create
manager_start
server=${server_pids[0]}
serial=3b7c1f0e-5a2d-4e8b-9c61-0d4f2a7e8b15
nic=8e2d4c6a-1f3b-4a5c-b7d9-2e0f6a8c4b13
ctl start --type mtty-2 --uuid "$serial" >/dev/null
ctl start --type virtio-net --uuid "$nic" --param tap=vtap0 --param mac=52:54:00:e2:e0:04 --param msix=off >/dev/null
tap_peer_setup
fds() { fd_count "$server"; }
fds_idle=$(fds)
qmp() { printf '{"execute":"qmp_capabilities"}\n%s\n' "$1" | socat -t 5 - "UNIX-CONNECT:$work/qmp.sock"; }
qmp_ok() {
  local reply
  reply=$(qmp "$2")
  ! echo "$reply" | grep -q '"error"' || fail "$1: $reply"
}
add() { qmp_ok "round $n: device_add $1" "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"vfio-user-pci\",\"id\":\"$1$n\",\"socket\":{\"type\":\"unix\",\"path\":\"$guest_dir/$2.sock\"}}}"; }
del() { qmp_ok "round $n: device_del $1" "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"$1$n\"}}"; }
count() { grep -c "$1" "$work/server-manager.log" || true; }

GUEST_ARGS="e2e.rounds=$rounds e2e.devices=$devices" e2e_boot_background hotplug -qmp "unix:$guest_dir/qmp.sock,server=on,wait=off"
console_wait "^E2E-HOTPLUG-READY" "$E2E_TIMEOUT"
for n in $(seq "$rounds"); do
  case $devices in *mtty*) add serial "$serial";; esac
  case $devices in *net*) add nic "$nic";; esac
  console_wait "^E2E-HOTPLUG-UP $n " 120
  line=$(grep "^E2E-HOTPLUG-UP $n " "$work/console.log" | tr -d '\r')
  case $devices in *mtty*) echo "$line" | grep -q "ports=2 looped=2" || fail "round $n: the guest did not drive both ports: $line";; esac
  case $devices in *net*) echo "$line" | grep -q "ping=ok" || fail "round $n: the guest did not ping through the NIC: $line";; esac
  log "ok: round $n: the guest found the hot-added devices and drove them: $line"
  case $devices in *mtty*) del serial;; esac
  case $devices in *net*) del nic;; esac
  console_wait "^E2E-HOTPLUG-DOWN $n gone" 120
  # No wait for the server here: the next device_add may reach it while these sessions still end.
  log "ok: round $n: the guest ejected them"
done
console_wait "^E2E-DONE" 60
wait "$qemu_pid" 2>/dev/null || true
check_guest_clean
for _ in $(seq 100); do [ "$(count "client detached")" -eq $sessions ] && [ "$(fds)" -eq "$fds_idle" ] && break; sleep 0.1; done
[ "$(count "refused a client")" -eq 0 ] || fail "a hot-add was refused: $(grep refused "$work/server-manager.log")"
[ "$(count "client attached")" -eq $sessions ] || fail "expected $sessions sessions: $(grep attached "$work/server-manager.log")"
[ "$(count "client detached")" -eq $sessions ] || fail "$(count "client detached") of $sessions sessions ended"
[ "$(fds)" -eq "$fds_idle" ] || fail "the server holds $(fds) fds, $fds_idle before QEMU came"
log "ok: $rounds rounds, $sessions sessions, none refused, all ended; $fds_idle fds as before QEMU came"
ctl stop --uuid "$serial" >/dev/null && ctl stop --uuid "$nic" >/dev/null
server_stop
log "PASS"
