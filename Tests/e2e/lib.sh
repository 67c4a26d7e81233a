# Shared harness for the end-to-end tests: a real QEMU (>= 10.1.1, from Debian trixie-backports in a
# chroot, see qemu-root.sh), a Linux guest under TCG, and the server built by `swift build`.
# Source it; then call e2e_setup NAME, server_start, e2e_boot, and the check helpers.
# ISOLATE=process starts every server with --isolate process (each instance in a worker).

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
SERVER_BIN=${SERVER_BIN:-$REPO/.build/debug/vfio-user-server}
# Longer than a guest's own waits add up to (the virtio-net check alone lets its 10 MiB send take
# 120 s), so that a slow guest reports what timed out instead of being killed: under TCG on a
# loaded machine (RCU stall warnings in the console) a message-mode guest has taken over 180 s.
E2E_TIMEOUT=${E2E_TIMEOUT:-360}

source "$E2E_DIR/checks.sh"

log() { printf '[e2e %s] %s\n' "${E2E_NAME:-}" "$*" >&2; }
fail() { log "FAIL: $*"; [ -n "${work:-}" ] && [ -f "$work/console.log" ] && tail -n 40 "$work/console.log" >&2; exit 1; }

# e2e_setup NAME: the QEMU tree, a scratch directory inside it (so QEMU in the chroot sees the
# sockets at $guest_dir), /dev and /proc mounted into it, and cleanup on exit.
e2e_setup() {
  E2E_NAME=$1
  ROOT=$("$E2E_DIR/qemu-root.sh")
  [ -x "$SERVER_BIN" ] || fail "no server binary at $SERVER_BIN (run swift build)"
  # A directory of its own even when a run killed before its cleanup left one behind (PIDs repeat,
  # most of all in a fresh container, and a stale socket there would pass for a listening server).
  mkdir -p "$ROOT/run"
  work=$(mktemp -d "$ROOT/run/e2e-$E2E_NAME-XXXXXX")
  guest_dir=${work#"$ROOT"}
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  server_pids=()
  helper_pids=()
  trap e2e_cleanup EXIT
  KERNEL=$(cd "$ROOT" && ls boot/vmlinuz-* | head -1)
  KVERSION=${KERNEL#boot/vmlinuz-}
}

e2e_cleanup() {
  # Runs on every exit: keeps the test's status, and a helper that is already gone (kill or wait
  # failing) must not turn a pass into a failure under set -e.
  local status=$?
  set +e
  for pid in "${server_pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
  for pid in "${helper_pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
  for pid in "${server_pids[@]:-}" "${helper_pids[@]:-}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null; done
  # What runs in the namespace (nc listeners started through in_netns, whose recorded pid is the
  # subshell's) goes with it.
  if [ -n "${E2E_NETNS:-}" ]; then
    ip netns pids "$E2E_NETNS" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "$E2E_NETNS" 2>/dev/null
  fi
  if [ -n "${E2E_KEEP:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
  exit "$status"
}

# netns_create: a network namespace for the test's traffic (deleted on exit); in_netns runs in it.
# Its name carries this shell's PID and a random part. Namespaces a killed run left behind (empty,
# their creator gone) are removed first; a name that is still taken is not reused.
netns_create() {
  local name creator
  for name in $(ip netns list | awk '/^vfu-e2e-/ { print $1 }'); do
    creator=${name#vfu-e2e-}; creator=${creator%%-*}
    kill -0 "$creator" 2>/dev/null && continue
    [ -z "$(ip netns pids "$name" 2>/dev/null)" ] && ip netns del "$name" 2>/dev/null
  done
  for _ in 1 2 3 4 5; do
    name=vfu-e2e-$$-$RANDOM
    if ip netns add "$name" 2>/dev/null; then
      E2E_NETNS=$name
      ip netns exec "$E2E_NETNS" ip link set lo up
      return 0
    fi
  done
  fail "could not create a network namespace (last tried $name)"
}
in_netns() { ip netns exec "$E2E_NETNS" "$@"; }

# server_start SOCKETNAME ARGS...: starts the server on $work/SOCKETNAME (inside the test's
# network namespace if there is one), waits for the socket.
server_start() {
  local name=$1; shift
  local prefix=()
  [ -n "${E2E_NETNS:-}" ] && prefix=(ip netns exec "$E2E_NETNS")
  [ -n "${SERVER_CPUS:-}" ] && prefix+=(taskset -c "$SERVER_CPUS")
  "${prefix[@]}" "$SERVER_BIN" "$@" ${ISOLATE:+--isolate "$ISOLATE"} --socket-path "$work/$name" --socket-dir "$work" --control "$work/control-$name" \
    >"$work/server-$name.log" 2>&1 &
  server_pids+=($!)
  for _ in $(seq 100); do [ -S "$work/$name" ] && return 0; sleep 0.1; done
  cat "$work/server-$name.log" >&2
  fail "server did not listen on $name"
}

# manager_start: starts a server with no device of its own (instances come through its control
# socket, $work/control.sock, and listen in $work), inside the test's namespace if there is one.
manager_start() {
  local prefix=()
  [ -n "${E2E_NETNS:-}" ] && prefix=(ip netns exec "$E2E_NETNS")
  "${prefix[@]}" "$SERVER_BIN" --no-default-device ${ISOLATE:+--isolate "$ISOLATE"} --socket-dir "$work" --control "$work/control.sock" "$@" \
    >"$work/server-manager.log" 2>&1 &
  server_pids+=($!)
  for _ in $(seq 100); do [ -S "$work/control.sock" ] && return 0; sleep 0.1; done
  cat "$work/server-manager.log" >&2
  fail "server did not open its control socket"
}

# serving_pids PID: the server and, when it isolates instances, its workers (its children).
serving_pids() { echo "$1"; pgrep -P "$1" || true; }
# fd_count PID: the open fds of the server and its workers together.
fd_count() {
  local pid total=0
  for pid in $(serving_pids "$1"); do total=$((total + $(ls "/proc/$pid/fd" | wc -l))); done
  echo "$total"
}
# guest_memory_mappings PID: mappings of the guest's memfd in the server and its workers.
guest_memory_mappings() {
  local pid
  for pid in $(serving_pids "$1"); do cat "/proc/$pid/maps"; done | grep -c "memfd:mem" || true
}

# ctl SUBCOMMAND ARGS...: a management subcommand against manager_start's server.
ctl() { "$SERVER_BIN" "$@" --control "$work/control.sock"; }

# server_stop: SIGTERM every server; each must exit 0 and remove its socket.
server_stop() {
  local pid
  for pid in "${server_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || fail "server $pid already gone"
    wait "$pid" || fail "server $pid exited with status $? after SIGTERM"
  done
  server_pids=()
  if ls "$work"/*.sock >/dev/null 2>&1; then fail "socket files left behind: $(ls "$work"/*.sock)"; fi
}

# device_json SOCKETNAME: the -device argument that attaches it.
# relay_start KIND LISTEN TARGET: something between QEMU and the server, logging to
# $work/relay.log. KIND is proxy (vfio-user-server proxy: fds pass) or socat (they do not).
relay_start() {
  local kind=$1 listen=$work/$2 target=$work/$3
  case $kind in
    proxy) "$SERVER_BIN" proxy --listen "$listen" --connect "$target" --once >"$work/relay.log" 2>&1 & ;;
    socat) socat -d -d "UNIX-LISTEN:$listen,unlink-early" "UNIX-CONNECT:$target" >"$work/relay.log" 2>&1 & ;;
    *) fail "unknown relay $kind" ;;
  esac
  relay_pid=$!
  for _ in $(seq 100); do [ -S "$listen" ] && return 0; sleep 0.1; done
  cat "$work/relay.log" >&2
  fail "the $kind relay did not listen on $2"
}
# relay_stop: ends the relay (the proxy with --once ends by itself when QEMU leaves) and removes
# its socket, so that server_stop finds only what the server left.
relay_stop() {
  [ -n "${relay_pid:-}" ] || return 0
  kill -TERM "$relay_pid" 2>/dev/null || true
  wait "$relay_pid" 2>/dev/null || true
  relay_pid=
  rm -f "$work/relay.sock"
}
device_json() { printf '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"%s/%s"}}' "$guest_dir" "$1"; }

# e2e_initramfs: busybox, the guest test scripts, fbtool and iobench (static), and the kernel modules the tests
# load (xz-unpacked: busybox insmod cannot read .ko.xz).
e2e_initramfs() {
  local stage=$work/initramfs
  rm -rf "$stage"; mkdir -p "$stage"/{bin,dev,proc,sys,tmp,tests,modules}
  cp "$(command -v busybox)" "$stage/bin/busybox"
  cp "$E2E_DIR/guest/init" "$stage/init"
  cp "$E2E_DIR"/guest/*.sh "$stage/tests/"
  gcc -static -O2 -Wall -o "$stage/tests/fbtool" "$E2E_DIR/guest/fbtool.c" || fail "cannot build the guest's fbtool"
  gcc -static -O2 -Wall -o "$stage/tests/iobench" "$E2E_DIR/guest/iobench.c" || fail "cannot build the guest's iobench"
  chmod +x "$stage/init" "$stage"/tests/*.sh
  local module
  for module in net/core/failover drivers/net/net_failover drivers/net/virtio_net \
      drivers/gpu/drm/drm drivers/gpu/drm/drm_kms_helper drivers/gpu/drm/ttm/ttm drivers/gpu/drm/drm_ttm_helper \
      drivers/gpu/drm/drm_vram_helper drivers/gpu/drm/tiny/bochs; do
    local path=$ROOT/lib/modules/$KVERSION/kernel/$module.ko.xz
    [ -f "$path" ] && xz -dc "$path" > "$stage/modules/$(basename "$module").ko"
  done
  (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"
}

# qemu_command TEST [QEMU ARGS...]: sets qemu_args to the chroot'ed QEMU command line that boots the
# guest running guest/TEST.sh. MEMORY=memfd (default) gives fd-backed RAM (DMA by mmap); MEMORY=anon
# plain RAM (DMA by messages).
qemu_command() {
  local test=$1; shift
  [ -f "$work/initrd.gz" ] || e2e_initramfs
  local memory=(-object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem)
  [ "${MEMORY:-memfd}" = anon ] && memory=()
  log "booting guest for $test (memory ${MEMORY:-memfd})"
  qemu_args=(chroot "$ROOT" qemu-system-x86_64
    -machine pc -accel tcg -m 256M "${memory[@]}" -nodefaults -nographic -serial stdio -no-reboot
    -kernel "/$KERNEL" -initrd "$guest_dir/initrd.gz"
    -append "console=ttyS0 quiet 8250.nr_uarts=16 panic=-1 e2e=$test ${GUEST_ARGS:-}"
    "$@")
}

# e2e_boot TEST [QEMU ARGS...]: boots the guest running guest/TEST.sh to its end; console in
# $work/console.log.
e2e_boot() {
  qemu_command "$@"
  local status=0
  timeout "$E2E_TIMEOUT" "${qemu_args[@]}" >"$work/console.log" 2>&1 || status=$?
  [ $status -eq 124 ] && fail "guest did not finish within ${E2E_TIMEOUT}s"
  grep -q "E2E-DONE" "$work/console.log" || fail "guest did not reach the end of $1 (QEMU status $status)"
}

# e2e_boot_background TEST [QEMU ARGS...]: starts the same guest and returns; qemu_pid is QEMU's
# own pid (chroot execs it), console in $work/console.log.
e2e_boot_background() {
  qemu_command "$@"
  "${qemu_args[@]}" >"$work/console.log" 2>&1 &
  qemu_pid=$!
  helper_pids+=($qemu_pid)
}

# console_wait PATTERN SECONDS: waits until the console has a line matching PATTERN.
console_wait() {
  local _
  for _ in $(seq $(($2 * 10))); do grep -Eq "$1" "$work/console.log" && return 0; sleep 0.1; done
  fail "no console line matching /$1/ within $2 s"
}

# expect PATTERN WHAT: the console must contain a line matching PATTERN (extended regex).
expect() { grep -Eq "$1" "$work/console.log" || fail "$2 (no line matching /$1/)"; log "ok: $2"; }
console_value() { sed -n "s/^$1 //p" "$work/console.log" | tr -d '\r' | head -1; }
