#!/usr/bin/env bash
# Provides the one Debian base image every project image builds FROM.
#
#   build-base-image.sh SUITE IMAGE [ARCHIVE]
#
# Part of the stack_images role (which runs it on the controller); the target images of
# the tests are built on the same base (scripts/build-target-image.sh).
# No registry is reachable from these machines, so when IMAGE is not present and cannot be
# pulled it is made offline: debootstrap minbase from Debian's mirror, trimmed the way the
# official slim images are (no docs, man pages or locales), then `docker import`. Prints the
# image ID. With ARCHIVE, the image is also written
# there with `docker save`, for hosts that can neither pull nor build it.
set -euo pipefail

suite=${1:?usage: build-base-image.sh SUITE IMAGE [ARCHIVE]}
image=${2:?usage: build-base-image.sh SUITE IMAGE [ARCHIVE]}
archive=${3:-}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! docker image inspect "$image" >/dev/null 2>&1 && ! docker pull -q "$image" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  rootfs=$(mktemp -d /var/tmp/prodstack-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "base image: debootstrap $suite into $rootfs" >&2
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
  # Keep later apt installs in derived images as small as the slim images keep theirs.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/99-no-recommends"
  # As in the official images: no package caches left in any layer an install makes.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$image" >/dev/null
fi

docker image inspect --format '{{.Id}}' "$image"
if [ -n "$archive" ]; then
  mkdir -p "$(dirname "$archive")"
  docker save -o "$archive" "$image"
fi
