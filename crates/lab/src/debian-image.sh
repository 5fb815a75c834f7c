#!/bin/sh
# The lab's Debian 12 host: a minimal bookworm root with systemd, udev,
# openssh-server, sudo, curl and python3 (what Ansible needs on a target),
# the kernel workspace's modules and an initramfs made by Debian's own
# initramfs-tools, packed into an ext4 disk image. Run by
# crates/lab/src/debian.rs, which caches the result; everything here comes
# from Debian packages (mmdebstrap) and the kernel workspace.
#
# Environment: OUT (empty directory for disk.raw and initrd.img), KROOT
# (the unpacked kernel package: boot/ and lib/modules/), RELEASE,
# PUBKEY (root's authorized SSH key), MIRROR (optional Debian mirror).
set -eu
: "${OUT:?}" "${KROOT:?}" "${RELEASE:?}" "${PUBKEY:?}"
root=$OUT/root
mkdir -p "$root"
set -- --quiet --variant=minbase \
	--include=systemd,systemd-sysv,udev,dbus,openssh-server,sudo,initramfs-tools,kmod,iproute2,ca-certificates,curl,python3,procps,less \
	--customize-hook="mkdir -p \"\$1/lib/modules\" && cp -a '$KROOT/lib/modules/$RELEASE' \"\$1/lib/modules/\" && cp -a '$KROOT/boot/.' \"\$1/boot/\"" \
	--customize-hook="chroot \"\$1\" depmod '$RELEASE'" \
	--customize-hook="chroot \"\$1\" mkinitramfs -o '/boot/initrd.img-$RELEASE' '$RELEASE'" \
	bookworm "$root"
if [ -n "${MIRROR:-}" ]; then set -- "$@" "$MIRROR"; fi
mmdebstrap "$@"

echo noreboot-guest >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tnoreboot-guest\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$root/etc/fstab"
# QEMU's user-mode network: DHCP from 10.0.2.2's side, DNS at 10.0.2.3.
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/20-wired.network"
sys=$root/etc/systemd/system
mkdir -p "$sys/multi-user.target.wants" "$sys/sockets.target.wants" "$sys/network-online.target.wants"
ln -sf /lib/systemd/system/systemd-networkd.service "$sys/multi-user.target.wants/"
ln -sf /lib/systemd/system/systemd-networkd.socket "$sys/sockets.target.wants/"
ln -sf /lib/systemd/system/systemd-networkd-wait-online.service "$sys/network-online.target.wants/"
# Nothing in a test should start on its own but what the test installs:
# apt's daily runs, filesystem scrubs and time sync are masked.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
	fstrim.timer systemd-timesyncd.service; do
	ln -sf /dev/null "$sys/$unit"
done
# The journal kept across reboots: a test reads the boot before.
mkdir -p "$root/var/log/journal"
# The host has no Debian mirror: what the guest installs comes from the
# image or from the server under test.
: >"$root/etc/apt/sources.list"
rm -f "$root/etc/apt/sources.list.d/"*
rm -f "$root/var/lib/apt/lists/"*_Packages "$root/var/lib/apt/lists/"*Release "$root/var/cache/apt/"*.bin
mkdir -p -m 0700 "$root/root/.ssh"
install -m 0600 "$PUBKEY" "$root/root/.ssh/authorized_keys"
# A fresh machine-id on every boot of the image, as a cloned VM gets.
: >"$root/etc/machine-id"

cp "$root/boot/initrd.img-$RELEASE" "$OUT/initrd.img"
mkfs.ext4 -q -F -L noreboot-root -d "$root" "$OUT/disk.raw" 4G
rm -rf "$root"
