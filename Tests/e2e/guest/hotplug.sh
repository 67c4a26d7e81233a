#!/bin/sh
# Hot-plug rounds (the host adds and removes an mtty-2 and a virtio-net through QEMU's QMP): each
# round waits for both to appear, loops a line through each serial port, pings the host's
# namespace through the NIC, reports, then waits for both to go.
. /tests/lib.sh
for module in failover net_failover virtio_net; do insmod /modules/$module.ko || echo "E2E-FAILED insmod $module"; done
ip link set lo up
rounds=$(sed -n 's/.*e2e.rounds=\([0-9]*\).*/\1/p' /proc/cmdline)
devices=$(sed -n 's/.*e2e.devices=\([a-z,]*\).*/\1/p' /proc/cmdline)
case $devices in *mtty*) mtty=1;; *) mtty=;; esac
case $devices in *net*) nic=1;; *) nic=;; esac
echo "E2E-HOTPLUG-READY $rounds"

# wait_for WHAT CONDITION...: polls (0.2 s) until CONDITION holds, for at most two minutes.
wait_for() {
  what=$1; shift
  t=0
  until "$@"; do
    sleep 0.2; t=$((t + 1)); [ $t -lt 600 ] || { echo "E2E-FAILED round $n: $what"; exit 1; }
  done
}
bound() { dev=$(pci_device "$1" "$2") && [ -e "$dev/driver" ]; }
interface() { net=$(pci_device 0x1af4 0x1041) && iface=$(ls $net/virtio*/net 2>/dev/null | head -1) && [ -n "$iface" ]; }
gone() { ! pci_device "$1" "$2" > /dev/null; }

for n in $(seq "$rounds"); do
  [ -n "$mtty" ] && wait_for "the mtty-2 did not come" bound 0x4348 0x3253
  [ -n "$nic" ] && wait_for "the virtio-net did not come" interface
  sleep 1
  ports=
  [ -n "$mtty" ] && bdf=$(basename "$(pci_device 0x4348 0x3253)") && ports=$(dmesg | sed -n "s/.*$bdf: \(ttyS[0-9]*\) at I\/O.*/\1/p" | tail -2)
  looped=0
  for p in $ports; do
    stty -F /dev/$p raw -echo cs8 -parenb -cstopb clocal -crtscts 115200 || echo "E2E-FAILED stty $p"
    cat /dev/$p > /tmp/$p.out &
    reader=$!
    sleep 0.3
    printf "round $n via $p\n" > /dev/$p
    m=0; while [ $m -lt 40 ] && ! grep -q "round $n via $p" /tmp/$p.out; do sleep 0.1; m=$((m + 1)); done
    kill $reader
    grep -q "round $n via $p" /tmp/$p.out && looped=$((looped + 1))
  done
  ping=none
  if [ -n "$nic" ]; then
    ip addr add 10.99.0.2/24 dev $iface
    ip link set $iface up
    m=0; while [ "$(cat /sys/class/net/$iface/operstate)" != up ] && [ $m -lt 50 ]; do sleep 0.1; m=$((m + 1)); done
    if ping -c 2 -W 3 10.99.0.1 > /dev/null 2>&1; then ping=ok; else ping=failed; fi
  fi
  echo "E2E-HOTPLUG-UP $n ports=$(echo $ports | wc -w) looped=$looped net=$iface ping=$ping"
  wait_for "the mtty-2 did not go" gone 0x4348 0x3253
  wait_for "the virtio-net did not go" gone 0x1af4 0x1041
  echo "E2E-HOTPLUG-DOWN $n gone"
done
