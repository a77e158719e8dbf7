#!/usr/bin/env bash
# Builds (once) a Debian VM disk from Debian packages only and prints the directory that
# holds it: disk.raw (ext4, the whole disk is the root filesystem), vmlinuz and initrd.img
# copied from its /boot for QEMU's direct kernel boot, and the SSH key of its `deploy` user.
# The directory is named after a hash of every build input (this script, suite, kernel,
# package list, mirror), so a changed input builds a new disk and an unchanged one is reused.
#
#   scripts/vm/build-disk.sh            Debian 12 with docker.io baked in (the fast test path)
#   VM_DOCKER=0 scripts/vm/build-disk.sh    without docker.io: the role installs it, as on a user's VM
#   VM_SUITE=trixie scripts/vm/build-disk.sh    Debian 13
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
suite=${VM_SUITE:-bookworm}
docker=${VM_DOCKER:-1}
kernel=${VM_KERNEL:-linux-image-amd64}
mirror=${VM_MIRROR:-http://deb.debian.org/debian}
size=${VM_DISK_SIZE:-12G}
# What a fresh Debian server install with sshd has, plus python3-requests for
# community.docker's modules and apparmor (Docker refuses to start containers when the
# kernel has AppArmor on and no parser is installed). dbus: every Debian install has it, and
# `shutdown -r` with a delay (Ansible's reboot module) asks logind over it; without it the
# disk without docker.io (whose Recommends bring dbus) failed "Failed to connect to bus".
packages=(systemd-sysv udev dbus openssh-server python3 python3-apt python3-requests sudo "$kernel"
  ifupdown isc-dhcp-client iproute2 ca-certificates apparmor)
# docker.io is installed with apt inside the disk so its Recommends come too, as
# `apt-get install docker.io` gives a user.
extra=()
[[ $docker == 1 ]] && extra=(docker.io)

key=$( { cat "$0"; echo "$suite $kernel $mirror $size ${packages[*]} ${extra[*]}"; } | sha256sum | cut -c1-12)
flavour=$suite-$([[ $docker == 1 ]] && echo docker || echo nodocker)
cache=$here/.cache/vm/disks
out=$cache/$flavour-$key
if [[ -f $out/disk.raw && -f $out/vmlinuz && -f $out/initrd.img ]]; then
  echo "$out"
  exit 0
fi

"$here/scripts/ensure-packages.sh" debootstrap e2fsprogs openssh-client
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-$flavour-XXXXXX")
root=$work/rootfs
mounted=()
cleanup() {
  local m
  for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s)

echo "build-disk: debootstrap $suite into $root" >&2
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  exit 1
}

# Services must not start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
if ((${#extra[@]})); then
  for m in proc sys dev; do
    mount --bind "/$m" "$root/$m"
    mounted=("$root/$m" "${mounted[@]}")
  done
  echo "build-disk: apt-get install ${extra[*]} (with Recommends)" >&2
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${extra[@]}" \
    >"$work/apt.log" 2>&1 || {
    tail -20 "$work/apt.log" >&2
    exit 1
  }
  for m in "${mounted[@]}"; do umount -l "$m"; done
  mounted=()
fi
rm -f "$root/usr/sbin/policy-rc.d"

echo "build-disk: configuring" >&2
echo prodstack-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 prodstack-vm\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 errors=remount-ro 0 1' >"$root/etc/fstab"
# net.ifnames=0 on the kernel command line keeps the name eth0.
printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' \
  >"$root/etc/network/interfaces"
# A throwaway test VM must not start unattended apt runs that lock dpkg mid-converge.
for unit in apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
chroot "$root" useradd --create-home --shell /bin/bash deploy
echo 'deploy ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/deploy"
chmod 0440 "$root/etc/sudoers.d/deploy"
ssh-keygen -q -t ed25519 -N '' -C "deploy@prodstack-vm" -f "$work/id_ed25519"
install -d -m 0700 "$root/home/deploy/.ssh"
install -m 0600 "$work/id_ed25519.pub" "$root/home/deploy/.ssh/authorized_keys"
chroot "$root" chown -R deploy:deploy /home/deploy/.ssh
chroot "$root" apt-get clean
rm -f "$root"/var/log/*.log

cp "$root/boot/vmlinuz-"* "$work/vmlinuz"
cp "$root/boot/initrd.img-"* "$work/initrd.img"
echo "build-disk: mkfs.ext4 -d ($size, sparse)" >&2
# stdout carries only the disk's path (the caller reads it): mkfs says "Creating regular
# file" there even with -q when the file does not exist yet.
mkfs.ext4 -q -F -L prodstack-root -d "$root" "$work/disk.raw" "$size" >&2
rm -rf "$root"
echo $(($(date +%s) - start)) >"$work/build-seconds"
mv "$work" "$out"
trap - EXIT
echo "build-disk: $out built in $(cat "$out/build-seconds") s" >&2
echo "$out"
