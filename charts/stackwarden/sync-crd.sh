#!/bin/sh
# Helm packages neither symlinks to files outside the chart nor anything above it,
# so the chart carries a copy of the generated CRD. Run this after regenerating
# crds/servicestack.yaml; `--check` only reports whether the copy is stale.
set -eu

chart_dir=$(cd "$(dirname "$0")" && pwd)
src="$chart_dir/../../crds/servicestack.yaml"
dst="$chart_dir/crds/servicestack.yaml"

if [ ! -f "$src" ]; then
    echo "sync-crd.sh: $src not found; generate it first (stackwarden crd)" >&2
    exit 1
fi

if [ "${1:-}" = "--check" ]; then
    if cmp -s "$src" "$dst"; then
        exit 0
    fi
    echo "sync-crd.sh: $dst differs from crds/servicestack.yaml; run charts/stackwarden/sync-crd.sh" >&2
    exit 1
fi

cp "$src" "$dst"
# The placeholder only exists to keep the empty directory in git.
rm -f "$chart_dir/crds/.gitkeep"
