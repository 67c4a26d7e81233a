#!/bin/sh
# virtio-net in the guest: the stock virtio_net driver binds to 1af4:1041, the link comes up, the
# host's namespace answers pings, 10 MiB go out over TCP, and a bulk stream comes in from the host.
. /tests/lib.sh
for module in failover net_failover virtio_net; do insmod /modules/$module.ko || echo "E2E-FAILED insmod $module"; done
dev=$(pci_device 0x1af4 0x1041) || { echo "E2E-FAILED no 1af4:1041 device"; exit 1; }
driver=$(basename "$(readlink $dev/driver)")
echo "E2E-DEVICE vendor=$(cat $dev/vendor) device=$(cat $dev/device) class=$(cat $dev/class) driver=$driver"
iface=$(ls $dev/virtio*/net 2>/dev/null | head -1)
[ -n "$iface" ] || { echo "E2E-FAILED no network interface"; exit 1; }
echo "E2E-IFACE $iface mac=$(cat /sys/class/net/$iface/address)"
echo "E2E-FEATURES $(cat $dev/virtio*/features)"
ip link set lo up
ip addr add 10.99.0.2/24 dev $iface
ip link set $iface up
# operstate follows through the kernel's linkwatch, up to a second or so later.
n=0
while [ "$(cat /sys/class/net/$iface/operstate)" != up ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
echo "E2E-LINK $(cat /sys/class/net/$iface/operstate)"
echo "E2E-LINKINFO carrier=$(cat /sys/class/net/$iface/carrier) $(ip link show $iface | head -1)"
if ping -c 3 -W 3 10.99.0.1 > /tmp/ping.log 2>&1; then echo "E2E-PING ok"; else echo "E2E-PING failed"; cat /tmp/ping.log; fi
head -c 10485760 /dev/urandom > /tmp/blob
echo "E2E-MD5 $(md5sum /tmp/blob | cut -d' ' -f1)"
if timeout 120 nc 10.99.0.1 5000 < /tmp/blob; then echo "E2E-SENT ok"; else echo "E2E-SENT failed"; fi
# Host to guest: the namespace sends a blob to port 5001 once this says it listens (nc ends when
# the sender closes; its stdin is a FIFO held open, as on the host). With the TAP's offloads the
# host's stack hands the NIC GSO frames of up to 64 KiB, each spread over many receive buffers.
mkfifo /tmp/rx-input
exec 3<>/tmp/rx-input
nc -l -p 5001 < /tmp/rx-input > /tmp/rx &
listener=$!
echo "E2E-RX-LISTEN 5001"
n=0
while kill -0 $listener 2>/dev/null && [ $n -lt 2400 ]; do sleep 0.1; n=$((n + 1)); done
if kill -0 $listener 2>/dev/null; then echo "E2E-FAILED the host's stream did not end within 240 s"; kill $listener; fi
echo "E2E-RX-MD5 $(md5sum /tmp/rx | cut -d' ' -f1) $(wc -c < /tmp/rx)"
rm -f /tmp/rx
stats=/sys/class/net/$iface/statistics
echo "E2E-RX-STATS packets=$(cat $stats/rx_packets) bytes=$(cat $stats/rx_bytes) errors=$(cat $stats/rx_errors) dropped=$(cat $stats/rx_dropped) length_errors=$(cat $stats/rx_length_errors)"
grep -E "virtio" /proc/interrupts | sed 's/^/E2E-INTR /'
cat /proc/net/dev | grep "$iface" | sed 's/^/E2E-NETDEV /'
