# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this file
# Paths of the kup lab, sourced by the other lab scripts (and usable from an interactive shell):
#
#   . lab/env.sh
#
# Everything lives under $LAB_DIR (default: <repo>/target/lab, git-ignored), filled by lab/setup.
# Override the location with KUP_LAB_DIR=/some/cache before sourcing.
#
# Defines:
#   LAB_REPO            the repository root
#   LAB_DIR             the lab cache root
#   LAB_QEMU            qemu-system-x86_64 (unpacked from Debian's .deb, not installed)
#   LAB_QEMU_LD_LIBRARY_PATH  LD_LIBRARY_PATH that QEMU needs (unpacked shared libraries)
#   LAB_QEMU_MODULE_DIR QEMU's loadable modules (exported as QEMU_MODULE_DIR when QEMU runs)
#   LAB_QEMU_DATA_DIRS  array: directories to pass to QEMU with -L (BIOS, option ROMs, keymaps)
#   LAB_QEMU_L_ARGS     array: the same as ready-made "-L DIR" arguments
#   LAB_QEMU10          qemu-system-x86_64 10.x from bookworm-backports (lab/fetch-qemu10; unpacked, not installed)
#   LAB_QEMU10_LD_LIBRARY_PATH, LAB_QEMU10_MODULE_DIR, LAB_QEMU10_DATA_DIRS, LAB_QEMU10_L_ARGS  the same for it
#   LAB_KERNEL          the Debian cloud kernel image (bzImage)
#   LAB_KERNEL_VERSION  its version string, e.g. 6.1.0-56-cloud-amd64
#   LAB_MODULES         its modules tree (lib/modules/$LAB_KERNEL_VERSION)
#   LAB_BUSYBOX         busybox (static)
#   LAB_KUP_MUSL        a static kup binary (built by lab/setup)
# and the functions lab_qemu ARGS... / lab_qemu10 ARGS... which run QEMU 7.2 / 10 with the environment above.

LAB_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB_DIR="${KUP_LAB_DIR:-$LAB_REPO/target/lab}"

LAB_QEMU_ROOT="$LAB_DIR/qemu"
LAB_QEMU="$LAB_QEMU_ROOT/usr/bin/qemu-system-x86_64"
LAB_QEMU_LD_LIBRARY_PATH="$LAB_QEMU_ROOT/usr/lib/x86_64-linux-gnu:$LAB_QEMU_ROOT/lib/x86_64-linux-gnu"
LAB_QEMU_MODULE_DIR="$LAB_QEMU_ROOT/usr/lib/x86_64-linux-gnu/qemu"
LAB_QEMU_DATA_DIRS=(
  "$LAB_QEMU_ROOT/usr/share/qemu"
  "$LAB_QEMU_ROOT/usr/share/seabios"
  "$LAB_QEMU_ROOT/usr/lib/ipxe/qemu"
)
LAB_QEMU_L_ARGS=()
for _lab_d in "${LAB_QEMU_DATA_DIRS[@]}"; do LAB_QEMU_L_ARGS+=(-L "$_lab_d"); done
unset _lab_d

LAB_QEMU10_ROOT="$LAB_DIR/qemu10"
LAB_QEMU10="$LAB_QEMU10_ROOT/usr/bin/qemu-system-x86_64"
LAB_QEMU10_LD_LIBRARY_PATH="$LAB_QEMU10_ROOT/usr/lib/x86_64-linux-gnu:$LAB_QEMU10_ROOT/lib/x86_64-linux-gnu"
LAB_QEMU10_MODULE_DIR="$LAB_QEMU10_ROOT/usr/lib/x86_64-linux-gnu/qemu"
LAB_QEMU10_DATA_DIRS=(
  "$LAB_QEMU10_ROOT/usr/share/qemu"
  "$LAB_QEMU10_ROOT/usr/share/seabios"
  "$LAB_QEMU10_ROOT/usr/lib/ipxe/qemu"
)
LAB_QEMU10_L_ARGS=()
for _lab_d in "${LAB_QEMU10_DATA_DIRS[@]}"; do LAB_QEMU10_L_ARGS+=(-L "$_lab_d"); done
unset _lab_d

LAB_KERNEL_ROOT="$LAB_DIR/kernel"
LAB_KERNEL_VERSION=""
[[ -f "$LAB_KERNEL_ROOT/version" ]] && LAB_KERNEL_VERSION="$(<"$LAB_KERNEL_ROOT/version")"
LAB_KERNEL="$LAB_KERNEL_ROOT/boot/vmlinuz-$LAB_KERNEL_VERSION"
LAB_MODULES="$LAB_KERNEL_ROOT/lib/modules/$LAB_KERNEL_VERSION"

LAB_BUSYBOX="$LAB_DIR/busybox/bin/busybox"

# A static kup for initramfs images (lab/setup builds it: cargo build --release --target x86_64-unknown-linux-musl).
LAB_KUP_MUSL="${CARGO_TARGET_DIR:-$LAB_REPO/target}/x86_64-unknown-linux-musl/release/kup"

# The marker lab/setup writes last: its presence means every part above was fetched and checked.
LAB_READY="$LAB_DIR/ready"

lab_qemu() {
  LD_LIBRARY_PATH="$LAB_QEMU_LD_LIBRARY_PATH" QEMU_MODULE_DIR="$LAB_QEMU_MODULE_DIR" \
    "$LAB_QEMU" "${LAB_QEMU_L_ARGS[@]}" "$@"
}

lab_qemu10() {
  LD_LIBRARY_PATH="$LAB_QEMU10_LD_LIBRARY_PATH" QEMU_MODULE_DIR="$LAB_QEMU10_MODULE_DIR" \
    "$LAB_QEMU10" "${LAB_QEMU10_L_ARGS[@]}" "$@"
}

# Fails (non-zero, with a message on stderr) unless lab/setup has completed.
lab_require() {
  if [[ ! -f "$LAB_READY" || ! -x "$LAB_QEMU" || ! -f "$LAB_KERNEL" || ! -x "$LAB_BUSYBOX" ]]; then
    echo "lab: not set up in $LAB_DIR: run lab/setup first" >&2
    return 1
  fi
}
