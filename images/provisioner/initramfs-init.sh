#!/bin/busybox sh
# /init of the provisioner initramfs (busybox; built by provisioner/image/initramfs.py).
#
# Disk boot (GRUB passes root=LABEL=ROOT mount.usr=PARTUUID=<USR-A|USR-B>, as Flatcar's grub.cfg):
#   mount ROOT read-write on /sysroot and the USR slot read-only on /sysroot/usr, seed ROOT's
#   writable state from /usr/share/factory on first boot, switch_root to systemd.
# PXE boot (this initramfs carries /usr.squashfs): a tmpfs is the root and the squashfs is /usr,
#   so the same system runs diskless in RAM.
# A USR slot that does not mount makes the machine reboot (after 5 s), so GRUB's A/B fallback can
# pick the other slot: GRUB already counted this try down. `rd.shell` gives a shell instead.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "provisioner-initrd: $*"; }

fail() {
    say "FAILED: $*"
    if [ -n "$RD_SHELL" ]; then
        say "rd.shell given: starting a shell"
        exec sh
    fi
    say "rebooting in 5 s"
    sleep 5
    sync
    reboot -f
}

ROOT_SPEC=LABEL=ROOT
USR_SPEC=
USR_FLAGS=ro
ROOT_FLAGS=rw
RD_SHELL=
for word in $(cat /proc/cmdline); do
    case "$word" in
        root=*) ROOT_SPEC="${word#root=}" ;;
        rootflags=*) ROOT_FLAGS="${word#rootflags=}" ;;
        mount.usr=*) USR_SPEC="${word#mount.usr=}" ;;
        mount.usrflags=*) USR_FLAGS="${word#mount.usrflags=}" ;;
        rd.shell) RD_SHELL=1 ;;
    esac
done

KVER=$(uname -r)
if [ -f /lib/modules/load.list ]; then
    while read -r module; do
        insmod "/lib/modules/$KVER/$module" 2>/dev/null
    done < /lib/modules/load.list
fi

# Print the device whose tag matches SPEC (LABEL=, PARTUUID=, PARTLABEL=, UUID= or a /dev path).
# util-linux blkid -p reads the GPT entry itself (PART_ENTRY_UUID/NAME), no udev needed. One blkid per
# device: with several devices, blkid -p stops at the first it cannot open (an empty card reader).
# Loop and RAM disks are skipped: nothing has set one up yet, and each blkid start costs ~0.1 s of
# every disk boot under an emulated CPU (the loop module adds eight).
lookup() {
    spec="$1"
    case "$spec" in
        /dev/*) [ -b "$spec" ] && echo "$spec"; return ;;
        LABEL=*) key=LABEL ;;
        UUID=*) key=UUID ;;
        PARTUUID=*) key=PART_ENTRY_UUID ;;
        PARTLABEL=*) key=PART_ENTRY_NAME ;;
        *) return ;;
    esac
    want=$(echo "${spec#*=}" | tr 'A-Z' 'a-z')
    for sysdev in /sys/class/block/*; do
        case "${sysdev##*/}" in loop*|ram*) continue ;; esac
        dev="/dev/${sysdev##*/}"
        [ -b "$dev" ] || continue
        value=$(/usr/lib/provisioner/blkid -p -o export "$dev" 2>/dev/null | sed -n "s/^$key=//p" | tr 'A-Z' 'a-z')
        if [ -n "$value" ] && [ "$value" = "$want" ]; then
            echo "$dev"
            return
        fi
    done
}

# Wait up to 30 s for SPEC to appear (disk drivers probe asynchronously).
wait_for() {
    tries=0
    while [ $tries -lt 150 ]; do
        dev=$(lookup "$1")
        if [ -n "$dev" ]; then echo "$dev"; return 0; fi
        tries=$((tries + 1))
        sleep 0.2
    done
    return 1
}

mkdir -p /sysroot
if [ -f /usr.squashfs ]; then
    say "live system: tmpfs root, /usr from the squashfs in this initramfs"
    mount -t tmpfs -o mode=0755 tmpfs /sysroot || fail "cannot mount the tmpfs root"
    mkdir -p /sysroot/usr
    mount -t squashfs -o ro,loop /usr.squashfs /sysroot/usr || fail "cannot mount /usr.squashfs"
else
    root_dev=$(wait_for "$ROOT_SPEC") || fail "ROOT ($ROOT_SPEC) not found"
    mount -o "$ROOT_FLAGS" "$root_dev" /sysroot || fail "cannot mount ROOT $root_dev"
    say "ROOT $root_dev mounted"
    [ -n "$USR_SPEC" ] || fail "no mount.usr= on the kernel command line"
    usr_dev=$(wait_for "$USR_SPEC") || fail "USR ($USR_SPEC) not found"
    mkdir -p /sysroot/usr
    mount -t squashfs -o "$USR_FLAGS" "$usr_dev" /sysroot/usr || {
        umount /sysroot
        fail "USR $USR_SPEC ($usr_dev) does not mount"
    }
    say "USR $usr_dev mounted ($USR_SPEC)"
fi

# The root skeleton (merged /usr, as Debian bookworm), recreated if ROOT was reformatted.
for link in bin sbin lib lib64; do
    [ -e "/sysroot/$link" ] || [ -L "/sysroot/$link" ] || ln -s "usr/$link" "/sysroot/$link"
done
for dir in dev proc sys run tmp boot oem mnt media srv opt; do
    mkdir -p "/sysroot/$dir"
done
chmod 1777 /sysroot/tmp

# First boot: copy the factory state without overwriting what an installer already placed
# (e.g. /var/lib/coreos-install/user_data).
# GNU tar of the OS itself (chroot): --skip-old-files keeps each file already there and still
# descends into existing directories. (busybox tar -k stops at the first existing file, and
# busybox cp -n skips whole existing directories.) One tar pair for all the directories: every
# start of tar from the squashfs is costly under an emulated CPU. A failed seed is tried again
# on the next boot.
if [ ! -e /sysroot/.provisioner-seeded ]; then
    dirs=
    for dir in $(cat /usr/lib/provisioner/factory-dirs 2>/dev/null || echo etc var home root); do
        [ -d "/sysroot/usr/share/factory/$dir" ] && dirs="$dirs $dir"
    done
    if [ -z "$dirs" ] || { chroot /sysroot /usr/bin/tar -C /usr/share/factory --numeric-owner -cf - $dirs |
            chroot /sysroot /usr/bin/tar -C / --numeric-owner --skip-old-files -xpf -; }; then
        : > /sysroot/.provisioner-seeded
        say "first boot: seeded ROOT from /usr/share/factory"
    else
        say "WARNING: seeding ROOT from /usr/share/factory failed ($dirs )"
    fi
fi

mount --move /dev /sysroot/dev
umount /proc /sys 2>/dev/null
exec switch_root /sysroot /usr/lib/systemd/systemd
