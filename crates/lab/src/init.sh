#!/bin/busybox sh
# noreboot lab guest: PID 1 of the initramfs. Mounts the usual file
# systems, loads the requested modules, sets up user-mode networking, runs
# the optional boot script, then serves commands on /dev/ttyS1 until told
# to quit. The console (ttyS0) only carries kernel messages and this
# script's own notes, so command output never mixes with them.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /usr/bin /usr/sbin /sbin /var/log
# All applet links go to /bin, so that files given to the lab in /usr/bin,
# /sbin or /usr/sbin are never replaced by an applet of the same name.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64:/usr/lib64
hostname lab
cd /root
echo "lab: init started"

if [ -f /lab/modules ]; then
	while read -r m; do
		insmod "$m" || echo "lab: insmod $m failed"
	done < /lab/modules
fi
ip link set lo up
if [ -f /lab/net ]; then
	ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
		|| echo "lab: network setup failed"
fi
if [ -f /lab/boot.sh ]; then
	echo "lab: running boot script"
	sh /lab/boot.sh
fi

stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
echo "lab: ready"
echo "READY" >&3
while read -r kind id payload <&3; do
	case "$kind" in
	X)
		echo "$payload" | base64 -d > /tmp/.lab-cmd
		( cd /root && exec sh /tmp/.lab-cmd ) > /tmp/.lab-out 2> /tmp/.lab-err < /dev/null
		st=$?
		{
			printf 'R %s %s O' "$id" "$st"
			base64 -w0 /tmp/.lab-out
			printf ' E'
			base64 -w0 /tmp/.lab-err
			printf '\n'
		} >&3
		;;
	Q)
		sync
		echo "BYE" >&3
		reboot -f
		;;
	*)
		echo "lab: unknown request $kind" ;;
	esac
done
echo "lab: command channel closed"
reboot -f
