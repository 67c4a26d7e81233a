#!/usr/bin/env bash
# Runs every benchmark on a release build and draws the chart: the figures in BENCHMARKS.md.
#   scripts/benchmarks.sh [RESULTS.json [CHART.svg]]
# Each benchmark prints its table; the figures also go to RESULTS.json, which the chart is drawn from.
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:-benchmarks.json}
chart=${2:-docs/benchmarks.svg}
scripts/ensure-packages.sh build
for product in vfio-user-server vfio-user-echo vfio-user-bench; do swift build -c release --product "$product"; done
bench=.build/release/vfio-user-bench
rm -f "$results"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)"
for benchmark in messages interrupts startup dma virtio; do
  echo
  "$bench" "$benchmark" --results "$results" 2> >(grep -v "^bench\|^virtio-net\|client attached\|client detached\|session summary\|^created" >&2)
done
mkdir -p "$(dirname "$chart")"
"$bench" chart "$results" --output "$chart"
