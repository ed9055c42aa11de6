#!/usr/bin/env bash
# Builds the local test images of stackwarden without any image registry:
#   stackwarden-test/base:bookworm     debootstrap'ed Debian with PostgreSQL 15 and Redis 7
#   stackwarden-test/postgres:15       behaves like the official postgres image (env, volume, healthcheck)
#   stackwarden-test/redis:7           behaves like the official redis image, plus REDIS_PASSWORD
#   stackwarden-test/demo-app:latest   the runbooks' backend stand-in (tests/src/bin/demo-app.rs)
#
# Every image carries the label stackwarden.dev/inputs-hash; an image whose label already
# matches the hash of its inputs is left alone, so a run with nothing changed is a no-op.
# Usage: build.sh            (from any directory)
# Sourced (as scripts/build-image.sh does), it only defines its functions: build_base and
# build_derived make any image the same way.
set -Eeuo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_DIR
readonly BUILD_DIR="$SCRIPT_DIR/.build"

readonly BASE_IMAGE="stackwarden-test/base:bookworm"
readonly POSTGRES_IMAGE="stackwarden-test/postgres:15"
readonly REDIS_IMAGE="stackwarden-test/redis:7"
readonly DEMO_APP_IMAGE="stackwarden-test/demo-app:latest"
readonly HASH_LABEL="stackwarden.dev/inputs-hash"

readonly SUITE="bookworm"
readonly MIRROR="http://deb.debian.org/debian"
# procps: `ps`/`top` make a misbehaving test container debuggable with `docker exec`.
# Not readonly: build_base sets it for make_base_tarball when making another base.
BASE_PACKAGES="postgresql-15,redis-server,ca-certificates,procps"

# The classic builder resolves FROM against local images only when they exist, so it never
# contacts a registry for our base; BuildKit would try to resolve image metadata remotely.
export DOCKER_BUILDKIT=0

SCRIPT_START=$(date +%s.%N)

log() { printf '[build.sh] %s\n' "$*" >&2; }
die() { printf '[build.sh] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
trap 'printf "[build.sh] FAILED (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

sha256_stdin() { sha256sum | cut -d' ' -f1; }

# Hash of a directory's regular files, names included, in a stable order.
hash_dir() {
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256_stdin
}

image_label() {
    docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true
}

image_id() {
    docker image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true
}

# A rebuilt image leaves its predecessor untagged; remove it so repeated test runs don't
# fill the disk. Failure is fine: a container may still use it.
remove_if_dangling() {
    local old_id="$1"
    [ -n "$old_id" ] || return 0
    if [ -z "$(docker image inspect -f '{{ join .RepoTags "," }}' "$old_id" 2>/dev/null)" ]; then
        if docker image rm "$old_id" >/dev/null 2>&1; then
            log "removed superseded image ${old_id:7:12}"
        fi
    fi
}

# The base recipe, for the packages in BASE_PACKAGES. Its text (via `declare -f`) is part of
# each base's hash, so editing the rest of this script does not trigger a new debootstrap; the
# text is unchanged since the test base was its only use, so that base's hash is too.
make_base_tarball() {
    local rootfs="$1" tarball="$2"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR"
    # Package installation creates a default cluster; the postgres image runs its own initdb
    # in /var/lib/postgresql/data, so the default one is dead weight.
    rm -rf "$rootfs"/etc/postgresql/15/main "$rootfs"/var/lib/postgresql/15/main
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    log "debootstrap is missing; installing it with apt-get"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
}

# A failed debootstrap can leave proc/sys mounted inside the target; deleting through a live
# mount would delete host files, so unmount first.
remove_rootfs() {
    local rootfs="$1"
    [ -e "$rootfs" ] || return 0
    local mounts
    mounts=$(awk -v p="$rootfs" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r)
    if [ -n "$mounts" ]; then
        log "unmounting leftovers under $rootfs"
        # shellcheck disable=SC2086
        umount -l $mounts
    fi
    rm -rf --one-file-system "$rootfs"
}

# build_base IMAGE PACKAGES: a debootstrap'ed Debian with PACKAGES, imported as IMAGE, unless
# IMAGE's label says it was made from the same recipe.
build_base() {
    local image="$1" packages="$2" hash
    hash=$({ declare -f make_base_tarball; echo "$SUITE $MIRROR $packages"; } | sha256_stdin)
    if [ "$(image_label "$image")" = "$hash" ]; then
        log "$image is up to date (${hash:0:12})"
        return 0
    fi
    # Each base keeps its own cached tarball and scratch rootfs.
    local slug="${image//[^A-Za-z0-9]/-}"
    local tarball="$BUILD_DIR/base-$slug-$hash.tar"
    if [ -f "$tarball" ]; then
        log "using cached rootfs tarball ${tarball#"$REPO_DIR"/}"
    else
        [ "$(id -u)" -eq 0 ] || die "building the base rootfs with debootstrap needs root"
        ensure_debootstrap
        local rootfs="$BUILD_DIR/rootfs-$slug"
        remove_rootfs "$rootfs"
        local t
        t=$(date +%s.%N)
        log "debootstrap $SUITE (minbase + $packages) from $MIRROR"
        BASE_PACKAGES="$packages" make_base_tarball "$rootfs" "$tarball"
        remove_rootfs "$rootfs"
        # Older tarballs of this base are from recipes no longer in use (base-<hash>.tar: the
        # naming from before there was more than one base).
        find "$BUILD_DIR" -maxdepth 1 \( -name "base-$slug-*.tar" -o -regex '.*/base-[0-9a-f]*\.tar' \) \
            ! -name "base-$slug-$hash.tar" -delete
        log "rootfs tarball built in $(elapsed_since "$t") s"
    fi
    local old_id t
    old_id=$(image_id "$image")
    t=$(date +%s.%N)
    log "docker import -> $image"
    docker import \
        --change "LABEL $HASH_LABEL=$hash" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        "$tarball" "$image" >/dev/null
    log "imported $image in $(elapsed_since "$t") s"
    remove_if_dangling "$old_id"
}

# build_derived TAG CONTEXT BASE: docker build of a context directory whose Dockerfile starts
# FROM BASE; the hash covers the context, this script and the exact base image, so a
# re-imported base rebuilds its children.
build_derived() {
    local tag="$1" context="$2" base="$3" hash
    hash=$({
        echo "$tag"
        hash_dir "$context"
        sha256sum "$SCRIPT_DIR/build.sh" | cut -d' ' -f1
        image_id "$base"
    } | sha256_stdin)
    if [ "$(image_label "$tag")" = "$hash" ]; then
        log "$tag is up to date (${hash:0:12})"
        return 0
    fi
    local old_id t
    old_id=$(image_id "$tag")
    t=$(date +%s.%N)
    log "docker build -> $tag"
    # Output is shown only on failure: on success it is just the legacy builder's
    # deprecation notice. --force-rm: the legacy builder otherwise leaves the container of a
    # failed step behind.
    local output
    if ! output=$(docker build --quiet --force-rm --label "$HASH_LABEL=$hash" -t "$tag" "$context" 2>&1); then
        printf '%s\n' "$output" >&2
        die "docker build of $tag failed"
    fi
    log "built $tag in $(elapsed_since "$t") s"
    remove_if_dangling "$old_id"
}

build_demo_app() {
    local cargo="${CARGO:-cargo}" t
    t=$(date +%s.%N)
    # The demo app needs none of the operator crate; leaving it out keeps this build fast and
    # independent of the operator's state of the day.
    log "cargo build --release -p stackwarden-tests --bin demo-app --no-default-features"
    "$cargo" build --release --manifest-path "$REPO_DIR/Cargo.toml" \
        -p stackwarden-tests --bin demo-app --no-default-features
    local target_dir
    target_dir=$("$cargo" metadata --format-version 1 --no-deps --manifest-path "$REPO_DIR/Cargo.toml" |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
    local binary="$target_dir/release/demo-app"
    [ -x "$binary" ] || die "cargo reported success but $binary does not exist"
    log "cargo build done in $(elapsed_since "$t") s"

    # The context is staged so that it holds exactly the Dockerfile and the binary: the hash
    # of the context is then the hash of the binary that goes into the image.
    local context="$BUILD_DIR/demo-app-context"
    mkdir -p "$context"
    cp "$SCRIPT_DIR/demo-app/Dockerfile" "$context/Dockerfile"
    rm -f "$context/demo-app.partial"
    if ! cmp -s "$binary" "$context/demo-app"; then
        cp "$binary" "$context/demo-app.partial"
        mv "$context/demo-app.partial" "$context/demo-app"
    fi
    build_derived "$DEMO_APP_IMAGE" "$context" "$BASE_IMAGE"
}

# Test binaries (and scripts/build-image.sh) may build concurrently; one build at a time, the
# others then find everything up to date. Held until the calling shell exits.
lock_build_dir() {
    mkdir -p "$BUILD_DIR"
    exec 9>"$BUILD_DIR/lock"
    if ! flock -n 9; then
        log "another image build is running; waiting for it"
        flock 9
    fi
}

main() {
    command -v docker >/dev/null 2>&1 || die "docker CLI not found"
    docker version --format '{{ .Server.Version }}' >/dev/null || die "cannot reach the Docker engine"
    lock_build_dir

    local t
    t=$(date +%s.%N)
    build_base "$BASE_IMAGE" "$BASE_PACKAGES"
    log "base: $(elapsed_since "$t") s"
    t=$(date +%s.%N)
    build_derived "$POSTGRES_IMAGE" "$SCRIPT_DIR/postgres" "$BASE_IMAGE"
    log "postgres: $(elapsed_since "$t") s"
    t=$(date +%s.%N)
    build_derived "$REDIS_IMAGE" "$SCRIPT_DIR/redis" "$BASE_IMAGE"
    log "redis: $(elapsed_since "$t") s"
    t=$(date +%s.%N)
    build_demo_app
    log "demo-app: $(elapsed_since "$t") s"
    log "all images ready in $(elapsed_since "$SCRIPT_START") s"
}

# Sourced: definitions only.
[ "${BASH_SOURCE[0]}" != "$0" ] || main "$@"
