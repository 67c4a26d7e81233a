#!/bin/sh
# Traffic that never ends, for the host to kill QEMU in the middle of: both mtty ports looping
# random bytes (reader and writer running), and the virtio-net NIC streaming TCP to the namespace
# (port 5001) and pinging it. Says E2E-BUSY once bytes and frames are seen flowing, then waits.
. /tests/lib.sh
for module in failover net_failover virtio_net; do insmod /modules/$module.ko || echo "E2E-FAILED insmod $module"; done
serial=$(pci_device 0x4348 0x3253) || { echo "E2E-FAILED no 4348:3253 device"; exit 1; }
nic=$(pci_device 0x1af4 0x1041) || { echo "E2E-FAILED no 1af4:1041 device"; exit 1; }
bdf=$(basename $serial)
for p in $(dmesg | sed -n "s/.*$bdf: \(ttyS[0-9]*\) at I\/O.*/\1/p"); do
  stty -F /dev/$p raw -echo cs8 -parenb -cstopb clocal -crtscts 115200 || echo "E2E-FAILED stty $p"
  cat /dev/$p > /tmp/$p.out &
  # Paced: an unpaced writer keeps a TCG guest in interrupt handlers and starves everything else.
  while :; do head -c 512 /dev/urandom; sleep 0.2; done > /dev/$p &
  ports="$ports $p"
done
iface=$(ls $nic/virtio*/net 2>/dev/null | head -1)
[ -n "$iface" ] || { echo "E2E-FAILED no network interface"; exit 1; }
ip addr add 10.99.0.2/24 dev $iface
ip link set $iface up
n=0
while [ "$(cat /sys/class/net/$iface/operstate)" != up ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
ping -i 0.2 10.99.0.1 > /dev/null 2>&1 &
nc 10.99.0.1 5001 < /dev/zero &
n=0
while [ $n -lt 60 ]; do
  flowing=yes
  for p in $ports; do [ "$(wc -c < /tmp/$p.out)" -gt 4096 ] || flowing=no; done
  [ "$(cat /sys/class/net/$iface/statistics/tx_bytes)" -gt 1048576 ] || flowing=no
  [ "$(cat /sys/class/net/$iface/statistics/rx_packets)" -gt 10 ] || flowing=no
  [ $flowing = yes ] && break
  sleep 0.5; n=$((n + 1))
done
echo "E2E-BUSY ports=$ports serial=$(for p in $ports; do wc -c < /tmp/$p.out; done | tr '\n' ' ')tx_bytes=$(cat /sys/class/net/$iface/statistics/tx_bytes) rx_packets=$(cat /sys/class/net/$iface/statistics/rx_packets) flowing=$flowing"
# Until the host kills QEMU.
sleep 3600
