#!/usr/bin/env bash
# Renders charts/stackwarden with helm's engine, lints it and validates what it would install
# (scripts/check_chart.py says what is checked). The Python packages it needs are pinned in
# scripts/check-chart.requirements.txt and installed from PyPI into a virtualenv under target/,
# made again when that file changes.
# Usage: scripts/check-chart.sh        (CI runs it; needs python3 with venv, and cargo)
set -euo pipefail
cd "$(dirname "$0")/.."

readonly REQUIREMENTS=scripts/check-chart.requirements.txt
readonly VENV=target/check-chart/venv
CARGO="${CARGO:-cargo}"

if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt" 2>/dev/null; then
    echo "check-chart: installing $REQUIREMENTS into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi

# The arguments the chart passes must be ones the binary accepts.
"$CARGO" build --quiet -p stackwarden
target_dir=$("$CARGO" metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
exec "$VENV/bin/python" scripts/check_chart.py "$target_dir/debug/stackwarden"
