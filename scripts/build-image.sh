#!/usr/bin/env bash
# Builds the operator image stackwarden:<version> without any image registry, the way the test
# images are built (tests/images/build.sh): a Debian bookworm minbase with ca-certificates is
# debootstrap'ed and imported as stackwarden/base:bookworm, and scripts/image/Dockerfile adds the
# release binary built here on the host.
#
# <version> is the operator crate's version, which must equal the chart's appVersion so that
# the chart's default image tag names this image.
# Usage: scripts/build-image.sh      (as root the first time: debootstrap needs it)
# Env:   IMAGE_REPOSITORY (default stackwarden), CARGO (default cargo)
set -Eeuo pipefail

# Definitions only: build_base, build_derived, lock_build_dir, log, die, REPO_DIR, BUILD_DIR.
# shellcheck source=tests/images/build.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../tests/images/build.sh"

log() { printf '[build-image.sh] %s\n' "$*" >&2; }
die() { printf '[build-image.sh] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'printf "[build-image.sh] FAILED (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

readonly OPERATOR_BASE="stackwarden/base:bookworm"
# TLS roots for S3 backup destinations and remote engines; nothing else is needed at run time
# (chrono-tz embeds the time zone database; glibc and libgcc come with minbase).
readonly OPERATOR_BASE_PACKAGES="ca-certificates"
readonly REPOSITORY="${IMAGE_REPOSITORY:-stackwarden}"
readonly CARGO="${CARGO:-cargo}"

# The crate version, checked against the chart's appVersion.
image_version() {
    local version app_version
    version=$("$CARGO" metadata --format-version 1 --no-deps --manifest-path "$REPO_DIR/Cargo.toml" |
        grep -o '"name":"stackwarden","version":"[^"]*"' | cut -d'"' -f8)
    [ -n "$version" ] || die "cannot read the stackwarden crate's version from cargo metadata"
    app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' \
        "$REPO_DIR/charts/stackwarden/Chart.yaml")
    [ "$version" = "$app_version" ] ||
        die "crate version $version differs from the chart's appVersion $app_version; make them equal"
    printf '%s\n' "$version"
}

# Prints the path of the freshly built release binary.
build_binary() {
    local t target_dir binary
    t=$(date +%s.%N)
    log "cargo build --release -p stackwarden"
    "$CARGO" build --release --manifest-path "$REPO_DIR/Cargo.toml" -p stackwarden >&2
    target_dir=$("$CARGO" metadata --format-version 1 --no-deps --manifest-path "$REPO_DIR/Cargo.toml" |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
    binary="$target_dir/release/stackwarden"
    [ -x "$binary" ] || die "cargo reported success but $binary does not exist"
    log "cargo build done in $(elapsed_since "$t") s"
    printf '%s\n' "$binary"
}

main() {
    command -v docker >/dev/null 2>&1 || die "docker CLI not found"
    docker version --format '{{ .Server.Version }}' >/dev/null || die "cannot reach the Docker engine"
    local version binary tag
    version=$(image_version)
    tag="$REPOSITORY:$version"
    binary=$(build_binary)
    lock_build_dir
    build_base "$OPERATOR_BASE" "$OPERATOR_BASE_PACKAGES"

    # The context holds exactly the Dockerfile and the binary, so its hash (the image's label)
    # is that of the binary and the recipe. The version is baked in through the Dockerfile copy
    # so that a version bump alone also rebuilds.
    local context="$BUILD_DIR/operator-context"
    mkdir -p "$context"
    sed "s/^ARG VERSION\$/ARG VERSION=$version/" "$REPO_DIR/scripts/image/Dockerfile" >"$context/Dockerfile"
    rm -f "$context/stackwarden.partial"
    if ! cmp -s "$binary" "$context/stackwarden"; then
        cp "$binary" "$context/stackwarden.partial"
        mv "$context/stackwarden.partial" "$context/stackwarden"
    fi
    build_derived "$tag" "$context" "$OPERATOR_BASE"
    log "$tag: $(docker image inspect -f '{{ .Size }}' "$tag" | awk '{ printf "%.1f MB", $1 / 1e6 }')"
    log "run it: docker run --rm $tag --version"
}

main "$@"
