#!/bin/bash
# The guest's setup, run by tests/boot.py as PID 1 of new mount, pid, net, uts,
# ipc and cgroup namespaces (unshare); everything mounted here disappears with
# the mount namespace.  It builds a throwaway root and execs systemd in it.
#
# Parameters, from the environment (tests/boot.py sets them all):
#   BOOT_SCRATCH  mount point of the scratch tmpfs (root, overlay layers)
#   BOOT_STAGE    tree copied over the guest root last (test files, harness units)
#   BOOT_INSTALL  a DESTDIR tree copied over the guest root first, or empty
#   BOOT_RESULTS  host directory bound at the guest's /results
#   BOOT_CONSOLE  pty bound at the guest's /dev/console (the host drains it)
#   BOOT_KMSG     FIFO bound at the guest's /dev/kmsg (the host drains it)
#   BOOT_SYSTEMD  the systemd binary to exec
#   BOOT_TARGET   the unit systemd boots
set -euo pipefail

# Device nodes bound from the host into the guest's private /dev.
DEV_NODES=(null zero full random urandom tty)
# Capabilities the guest's systemd must not have: they act on the host kernel,
# not on a namespace (modules, clock, raw I/O, kernel log, MAC policy, BPF ...).
DROPPED_CAPS=(sys_module sys_time sys_rawio syslog wake_alarm mac_admin mac_override
    sys_pacct block_suspend audit_control audit_read bpf perfmon)

R=$BOOT_SCRATCH
G="$R/root"

# --no-overwrite-dir keeps the metadata of existing directories (cp -a would
# chmod /tmp and friends); --keep-directory-symlink keeps the merged /usr links
# (/lib -> usr/lib) instead of replacing them with directories.
untar() {
    tar -C "$G" -xpf - --no-overwrite-dir --keep-directory-symlink
}

# Nothing mounted here may propagate back to the host.
mount --make-rprivate /

# Throwaway root: overlay of the host's / with a tmpfs upper layer.
mount -t tmpfs -o mode=0755 boot-scratch "$R"
mkdir "$R/upper" "$R/work" "$G"
mount -t overlay boot-root -o "lowerdir=/,upperdir=$R/upper,workdir=$R/work" "$G"

# Content: DESTDIR tree, then test files and harness units.
if [ -n "$BOOT_INSTALL" ]; then
    tar -C "$BOOT_INSTALL" -cf - . | untar
fi
tar -C "$BOOT_STAGE" -cf - . | untar

# Private /dev: nodev tmpfs (nodes the guest might mknod do not work) with a
# few safe nodes bound in, its own devpts, and a pty as console.
mount -t tmpfs -o mode=0755,nosuid,nodev boot-dev "$G/dev"
for node in "${DEV_NODES[@]}"; do
    touch "$G/dev/$node"
    mount --bind "/dev/$node" "$G/dev/$node"
done
mkdir "$G/dev/pts" "$G/dev/shm" "$G/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$G/dev/pts"
ln -s pts/ptmx "$G/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev boot-shm "$G/dev/shm"
ln -s /proc/self/fd "$G/dev/fd"
ln -s /proc/self/fd/0 "$G/dev/stdin"
ln -s /proc/self/fd/1 "$G/dev/stdout"
ln -s /proc/self/fd/2 "$G/dev/stderr"
touch "$G/dev/console"
mount --bind "$BOOT_CONSOLE" "$G/dev/console"
# A FIFO the host drains as /dev/kmsg: generators log there.
touch "$G/dev/kmsg"
mount --bind "$BOOT_KMSG" "$G/dev/kmsg"

# sysfs of our network namespace, read-only; cgroup2 rooted at our group.
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$G/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$G/sys/fs/cgroup"

mkdir -p "$G/results"
mount --bind "$BOOT_RESULTS" "$G/results"

cd "$G"
mkdir -p .oldroot
pivot_root . .oldroot
mount -t proc -o nosuid,nodev,noexec proc /proc
# Kernel settings outside the network namespace belong to the host.
mount --bind /proc/sys /proc/sys
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
fi
umount -l /.oldroot
rmdir /.oldroot

drop=$(printf ',-%s' "${DROPPED_CAPS[@]}")
drop=${drop#,}
exec env -i container=portreserve-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    setpriv --inh-caps="$drop" --bounding-set="$drop" \
    "$BOOT_SYSTEMD" --unit="$BOOT_TARGET" --show-status=no
