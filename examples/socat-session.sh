#!/usr/bin/env bash
# A vfio-user conversation typed by hand: VERSION, then a REGION_READ of the first 4 bytes of
# config space (vendor and device ID), sent with printf through socat, the replies shown with xxd
# and decoded by vfio-user-server decode.
#
#   examples/socat-session.sh /tmp/vfio-user-mtty-2.sock
#
# Every message is a 16-byte header (id u16, command u16, size u32, flags u32, error u32, all
# little-endian), then the payload. socat cannot pass file descriptors, which this conversation
# does not need.
set -euo pipefail
socket=${1:?usage: $0 SOCKET}
server=${VFIO_USER_SERVER:-$(dirname "$0")/../.build/debug/vfio-user-server}

# VERSION (command 1), id 1, 20 bytes: header + major 0, minor 0, no capabilities JSON.
version='\x01\x00\x01\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
# REGION_READ (command 9), id 2, 32 bytes: header + offset u64 0, region u32 7 (config), count u32 4.
read_config='\x02\x00\x09\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
read_config+='\x00\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x04\x00\x00\x00'

replies=$(mktemp)
trap 'rm -f "$replies"' EXIT
# Keep the connection open a moment so the replies come back before socat hangs up.
{ printf "$version$read_config"; sleep 0.5; } | socat - "UNIX-CONNECT:$socket" > "$replies"

echo "The server's replies, as bytes:"
xxd "$replies"
echo
echo "Decoded:"
xxd "$replies" | "$server" decode
