#!/usr/bin/env bash
# Builds the libFuzzer targets (with AddressSanitizer) and runs each for SECONDS (default 60).
#   scripts/fuzz.sh [SECONDS] [decoder|session|virtqueue|mbochs]...
# New inputs go to a scratch corpus under .build/fuzz-corpus (the committed seeds in
# Tests/Fuzz/corpus are read, never written); a crash leaves its input in .build/fuzz-crashes and
# fails the run: copy it to Tests/Fuzz/regressions/<target>/ with a name saying what it broke.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(decoder session virtqueue mbochs)
flags=(--scratch-path .build/fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING)
# libFuzzer prints the crash's stack itself; Swift's backtracer took over ten minutes on these binaries.
export SWIFT_BACKTRACE=enable=no
mkdir -p .build/fuzz-crashes
for target in "${targets[@]}"; do
  swift build --product "fuzz-$target" "${flags[@]}" 2>&1 | grep -E "error|Compiling|Build" | grep -v "Cannot export" || true
  binary=$(swift build --product "fuzz-$target" "${flags[@]}" --show-bin-path)/fuzz-$target
  corpus=.build/fuzz-corpus/$target
  mkdir -p "$corpus"
  echo "fuzz-$target: $seconds s"
  # Regressions first: each must pass before new inputs are tried.
  regressions=(Tests/Fuzz/regressions/"$target"/*)
  [ -e "${regressions[0]}" ] && "$binary" -runs=0 "${regressions[@]}" >/dev/null 2>&1
  "$binary" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix=.build/fuzz-crashes/"$target"- -print_final_stats=1 \
    "$corpus" Tests/Fuzz/corpus/"$target" 2>&1 | grep -E "^stat::(number_of_executed_units|new_units_added|peak_rss_mb)|ERROR|SUMMARY|Test unit written"
done
