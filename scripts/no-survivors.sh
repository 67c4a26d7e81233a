#!/usr/bin/env bash
# Fails (and kills them) if any process still carries the test run's marker in its environment:
# every process a test starts inherits VFIO_USER_TEST_RUN, and must have ended with its test.
#   scripts/no-survivors.sh MARKER
set -u
marker="VFIO_USER_TEST_RUN=$1"
survivors=()
for environment in /proc/[0-9]*/environ; do
  pid=${environment#/proc/}
  pid=${pid%/environ}
  [ "$pid" = $$ ] && continue
  if { tr "\0" "\n" <"$environment"; } 2>/dev/null | grep -qx "$marker"; then
    survivors+=("$pid")
  fi
done
[ ${#survivors[@]} -eq 0 ] && exit 0
for pid in "${survivors[@]}"; do
  echo "survived its test: $pid $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null)" >&2
  kill -KILL "$pid" 2>/dev/null
done
exit 1
