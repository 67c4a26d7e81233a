#!/usr/bin/env bash
# End to end with libvirt, as its users run VMs: libvirt 12 (trixie-backports, installed into the
# QEMU tree on first use) runs its daemon in the tree; the server runs on the host with every
# instance in a sandboxed worker and sockets of libvirt-qemu's group, mode 0660. The domain is
# examples/libvirt-domain.xml itself, with this test's paths put in and two more devices added
# (a virtio-net on a TAP and an mbochs); `virsh define` and `virsh start` boot it under TCG, and
# the guest runs the same checks as the mdev test. QEMU must run as libvirt's unprivileged user.
# `virsh destroy` ends it; the instances go back to idle, each with one session served.
#
# What the tree lacks compared with a host, and is turned off in its qemu.conf: cgroups and mount
# namespaces (no systemd and no cgroup tree in the chroot), and AppArmor/SELinux labelling
# (security_driver "none"). libvirt's DAC driver still runs QEMU as libvirt-qemu and hands it the
# kernel, initrd and console file.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
e2e_setup libvirt
if [ ! -x "$ROOT/usr/sbin/libvirtd" ] || [ ! -d "$ROOT/usr/lib/x86_64-linux-gnu/libvirt/connection-driver" ]; then
  log "installing libvirt into $ROOT"
  chroot "$ROOT" apt-get update -qq >&2
  chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -t trixie-backports libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients >&2
  chroot "$ROOT" apt-get clean
fi
mountpoint -q "$ROOT/sys" || mount -t sysfs sysfs "$ROOT/sys"
conf=$ROOT/etc/libvirt/qemu.conf
if ! grep -q "^# vfio-user-swift e2e" "$conf"; then
  cat >> "$conf" <<'CONF'
# vfio-user-swift e2e: a chroot has no cgroup tree, no systemd and no security modules.
cgroup_controllers = [ ]
namespaces = [ ]
security_driver = "none"
stdio_handler = "file"
CONF
fi
qemu_user=$(chroot "$ROOT" id -u libvirt-qemu)
qemu_group=$(chroot "$ROOT" id -g libvirt-qemu)
log "libvirt runs QEMU as uid $qemu_user, gid $qemu_group: the sockets are made for that group"

chroot "$ROOT" /usr/sbin/libvirtd --timeout 0 > "$work/libvirtd.log" 2>&1 &
helper_pids+=($!)
vsh() { chroot "$ROOT" virsh -q -c qemu:///system "$@"; }
for _ in $(seq 100); do vsh version >/dev/null 2>&1 && break; sleep 0.2; done
vsh version >/dev/null 2>&1 || fail "libvirtd did not answer: $(tail -5 "$work/libvirtd.log")"
log "ok: libvirtd answers: $(vsh version 2>/dev/null | grep 'Using library' | tr -s ' ')"
domain=vfio-user-demo
vsh destroy "$domain" >/dev/null 2>&1 || true
vsh undefine "$domain" >/dev/null 2>&1 || true

netns_create
chmod 0711 "$work" # libvirt-qemu passes through to the sockets; the directory stays unlisted
manager_start --isolate process --socket-group "$qemu_group" --socket-mode 0660 ${SERVER_TRACE:+--trace}
serial=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001 # the example's
mac=52:54:00:e2:e0:05
ctl start --type mtty-2 --uuid "$serial" >/dev/null
nic=$(ctl start --type virtio-net --param tap=vtap0 --param mac=$mac --json | sed -n 's/^{"uuid":"\([0-9a-f-]*\)".*/\1/p')
display=$(ctl start --type mbochs-medium --json | sed -n 's/^{"uuid":"\([0-9a-f-]*\)".*/\1/p')
[ -n "$nic" ] && [ -n "$display" ] || fail "start printed no UUID"
[ "$(stat -c '%g %a' "$work/$serial.sock")" = "$qemu_group 660" ] || fail "socket: $(stat -c '%U:%G %a' "$work/$serial.sock")"
tap_peer_setup
display_screenshots_setup "$display" "$work/control.sock"

e2e_initramfs
device_arg() { printf "    <qemu:arg value='-device'/>\n    <qemu:arg value='%s'/>\n" "$(device_json "$1")"; }
extra=$(device_arg "$nic.sock"; device_arg "$display.sock")
sed -e "s|/var/lib/vfio-user-demo/vmlinuz|/$KERNEL|" -e "s|/var/lib/vfio-user-demo/initrd.gz|$guest_dir/initrd.gz|" \
    -e "s|<cmdline>[^<]*</cmdline>|<cmdline>console=ttyS0 quiet 8250.nr_uarts=16 panic=-1 e2e=mdev e2e.hold</cmdline>|" \
    -e "s|/var/log/vfio-user-demo-console.log|$guest_dir/console.log|" -e "s|/run/vfio-user-swift|$guest_dir|" \
    "$REPO/examples/libvirt-domain.xml" > "$work/domain.xml"
awk -v extra="$extra" '/<\/qemu:commandline>/ { print extra } { print }' "$work/domain.xml" > "$work/domain-full.xml"
grep -q "$guest_dir/$serial.sock" "$work/domain-full.xml" || fail "the example's socket path was not replaced"
vsh define "$guest_dir/domain-full.xml" >/dev/null || fail "virsh define refused the example"
vsh start "$domain" >/dev/null || fail "virsh start: $(tail -20 "$ROOT/var/log/libvirt/qemu/$domain.log" 2>/dev/null)"
log "ok: virsh defined the example and started it"
qemu=$(pgrep -f "guest=$domain" | head -1)
[ -n "$qemu" ] || fail "no QEMU process for $domain"
[ "$(stat -c %u "/proc/$qemu")" = "$qemu_user" ] || fail "QEMU runs as uid $(stat -c %u "/proc/$qemu"), not libvirt-qemu's $qemu_user"
log "ok: QEMU (pid $qemu) runs as libvirt-qemu (uid $qemu_user)"
console_wait "^E2E-DONE" "$E2E_TIMEOUT"
[ "$(ctl list --json | grep -o '"state":"attached"' | wc -l)" -eq 3 ] || fail "not all three attached: $(ctl list --json)"
check_mtty_guest
check_virtio_net_guest $mac
check_mbochs_guest 1024 768
check_guest_clean

vsh destroy "$domain" >/dev/null || fail "virsh destroy"
for _ in $(seq 50); do [ "$(ctl list --json | grep -o '"state":"idle"' | wc -l)" -eq 3 ] && break; sleep 0.1; done
[ "$(ctl list --json | grep -o '"state":"idle","socket":"[^"]*","params":{[^}]*},"origin":"control-socket","sessions":1' | wc -l)" -eq 3 ] \
  || fail "after virsh destroy: $(ctl list --json)"
log "ok: virsh destroy ended QEMU; the three instances are idle again, one session each"
vsh undefine "$domain" >/dev/null
server_stop
log PASS
