#!/usr/bin/env bash
# The install as an administrator does it, into a scratch prefix: scripts/install.sh puts the
# binary, man pages, units and a configuration in place; systemd-analyze verifies the units and
# rates their hardening; each unit's ExecStart runs as systemd would run it (the device through
# socket activation, both with a notification socket), serves a client, reports READY=1 and
# STOPPING=1, and leaves no socket; --uninstall takes everything away again. Without systemd as
# PID 1 (containers, CI) the units themselves are not started: their commands are.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SERVER_BIN=${SERVER_BIN:-$REPO/.build/debug/vfio-user-server}
log() { printf '[install] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
work=$(mktemp -d /tmp/vfio-user-install-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
prefix=$work/prefix units=$work/prefix/lib/systemd/system

"$REPO/scripts/install.sh" --prefix "$prefix" --binary "$SERVER_BIN" >&2
for file in bin/vfio-user-server etc/vfio-user-swift/devices.json share/man/man1/vfio-user-server.1 \
            share/man/man1/vfio-user-server-serve.1 share/man/man1/vfio-user-server-restart.1 \
            lib/systemd/system/vfio-user-swift.service lib/systemd/system/vfio-user-device@.socket \
            lib/systemd/system/vfio-user-device@.service share/doc/vfio-user-swift/tap.conf; do
  [ -s "$prefix/$file" ] || fail "not installed: $file"
done
grep -q '^vfio-user-server-serve \\- Serve mediated devices' "$prefix/share/man/man1/vfio-user-server-serve.1" \
  || fail "the serve man page has no NAME line: $(head -3 "$prefix/share/man/man1/vfio-user-server-serve.1")"
grep -q "ExecStart=$prefix/bin/vfio-user-server serve --config $prefix/etc/vfio-user-swift/devices.json" "$units/vfio-user-swift.service" \
  || fail "the manager unit does not run the installed binary with the installed configuration"
log "ok: binary, $(ls "$prefix/share/man/man1" | wc -l) man pages, 3 units and the configuration installed"

verify=$(cd "$units" && systemd-analyze verify --man=no ./vfio-user-swift.service ./vfio-user-device@.socket 2>&1) \
  || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify complains: $verify"
for unit in vfio-user-swift.service vfio-user-device@.service; do
  score=$(cd "$units" && systemd-analyze security --offline=true "./$unit" 2>&1 | sed -n 's/^→ Overall exposure level for [^:]*: //p')
  [ -n "$score" ] || fail "systemd-analyze security rated nothing for $unit"
  log "ok: systemd-analyze verify is silent; security exposure of $unit: $score"
done

# exec_start UNIT INSTANCE RUNDIR: the unit's command line with %i and /run/… put in the scratch tree.
exec_start() {
  sed -n 's/^ExecStart=//p' "$units/$1" | sed -e "s/%i/$2/g" -e "s|/run/vfio-user-[a-z]*|$3|g"
}
notify_start() { # notify_start NAME: a notification socket, its messages in $work/NAME.log
  socat -u "UNIX-RECV:$work/$1" STDOUT > "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$work/$1" ] && return 0; sleep 0.1; done
  fail "no notification socket"
}
wait_for() { # wait_for FILE TEXT
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "no '$2' in $1: $(cat "$1" 2>/dev/null)"
}

# One device, socket activated: systemd-socket-activate listens where the .socket unit says and
# starts the service's command on the first connection, with LISTEN_FDS and LISTEN_PID.
mkdir -p "$work/device"
listen=$(sed -n 's/^ListenStream=//p' "$units/vfio-user-device@.socket" | sed -e 's/%i/mtty-2/' -e "s|/run/vfio-user-device|$work/device|")
notify_start device-notify
# shellcheck disable=SC2046
NOTIFY_SOCKET=$work/device-notify systemd-socket-activate -E NOTIFY_SOCKET -l "$listen" \
  $(exec_start vfio-user-device@.service mtty-2 "$work/device") > "$work/device.log" 2>&1 &
device=$!
pids+=($device)
for _ in $(seq 50); do [ -S "$listen" ] && break; sleep 0.1; done
# The mtty sample's PCI vendor id, read through the socket: the first connection started the server.
vendor=$("$prefix/bin/vfio-user-server" client "$listen" 'config VENDOR_ID') || fail "no client session: $(cat "$work/device.log")"
[ "$vendor" = "VENDOR_ID = 0x4348" ] || fail "read '$vendor'"
wait_for "$work/device-notify.log" "READY=1"
grep -q "on the inherited listening socket fd 3" "$work/device.log" || fail "not served on the socket systemd passed: $(cat "$work/device.log")"
kill -TERM "$device"
wait "$device" || fail "the device exited with status $? on SIGTERM"
wait_for "$work/device-notify.log" "STOPPING=1"
log "ok: the socket-activated mtty-2 served a client ($vendor), said READY=1 and STOPPING=1, and exited 0"

# The manager with the installed configuration, as vfio-user-swift.service runs it.
mkdir -p "$work/manager"
notify_start manager-notify
# shellcheck disable=SC2046
NOTIFY_SOCKET=$work/manager-notify $(exec_start vfio-user-swift.service "" "$work/manager") --control "$work/manager/control.sock" \
  > "$work/manager.log" 2>&1 &
manager=$!
pids+=($manager)
wait_for "$work/manager-notify.log" "READY=1"
uuid=$(sed -n 's/.*"uuid": "\([0-9a-f-]*\)".*/\1/p' "$prefix/etc/vfio-user-swift/devices.json" | head -1)
listed=$("$prefix/bin/vfio-user-server" list --json --control "$work/manager/control.sock")
echo "$listed" | grep -q "\"uuid\":\"$uuid\",\"type\":\"mtty-2\",\"state\":\"idle\"" || fail "list: $listed"
echo "$listed" | grep -q '"pid":' || fail "the configured device is not in a worker: $listed"
vendor=$("$prefix/bin/vfio-user-server" client "$work/manager/$uuid.sock" 'config VENDOR_ID') || fail "no client session: $(cat "$work/manager.log")"
[ "$vendor" = "VENDOR_ID = 0x4348" ] || fail "read '$vendor'"
kill -TERM "$manager"
wait "$manager" || fail "the manager exited with status $? on SIGTERM"
wait_for "$work/manager-notify.log" "STOPPING=1"
[ -z "$(ls "$work/manager")" ] || fail "left behind: $(ls "$work/manager")"
log "ok: the manager started the configured mtty-2 in a worker, said READY=1 once it listened, served a client, and took every socket away"

"$REPO/scripts/install.sh" --uninstall --prefix "$prefix" >&2
left=$(find "$prefix" -mindepth 1 2>/dev/null | head -5)
[ -z "$left" ] || fail "left after --uninstall: $left"
log "ok: --uninstall removed everything"
log PASS
