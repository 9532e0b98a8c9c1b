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
#   LAB_KERNEL          the Debian cloud kernel image (bzImage)
#   LAB_KERNEL_VERSION  its version string, e.g. 6.1.0-56-cloud-amd64
#   LAB_MODULES         its modules tree (lib/modules/$LAB_KERNEL_VERSION)
#   LAB_NEW_KERNEL      the kernel the lab upgrades to: the newest Debian cloud amd64 kernel >= 6.12 lab/setup
#                       found (bookworm-backports, trixie, trixie-backports, sid), a bzImage
#   LAB_NEW_KERNEL_VERSION  its release, e.g. 7.3.4+deb13-cloud-amd64
#   LAB_NEW_MODULES     its modules tree (lib/modules/$LAB_NEW_KERNEL_VERSION, with modules.dep)
#   LAB_QEMU10          qemu-system-x86_64 10.x from bookworm-backports (unpacked beside 7.2, not installed)
#   LAB_QEMU10_LD_LIBRARY_PATH, LAB_QEMU10_MODULE_DIR, LAB_QEMU10_DATA_DIRS, LAB_QEMU10_L_ARGS
#                       the same as the LAB_QEMU_* ones, for QEMU 10
#   LAB_BUSYBOX         busybox (static)
#   LAB_KUP_MUSL        a static kup binary (built by lab/setup)
# and the functions lab_qemu ARGS... and lab_qemu10 ARGS..., which run QEMU 7.2 / 10 with the environment above
# (lab_qemu_build NAME ROOT sets the five variables of one QEMU build).

LAB_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB_DIR="${KUP_LAB_DIR:-$LAB_REPO/target/lab}"

# Sets NAME, NAME_LD_LIBRARY_PATH, NAME_MODULE_DIR, NAME_DATA_DIRS and NAME_L_ARGS (see above) for the QEMU
# unpacked from Debian's .debs under ROOT: lab_qemu_build NAME ROOT. Both QEMU builds have the same layout.
lab_qemu_build() {
  local -n _lab_dirs="${1}_DATA_DIRS" _lab_l_args="${1}_L_ARGS"
  local _lab_root=$2 _lab_d
  printf -v "$1" '%s' "$_lab_root/usr/bin/qemu-system-x86_64"
  printf -v "${1}_LD_LIBRARY_PATH" '%s' "$_lab_root/usr/lib/x86_64-linux-gnu:$_lab_root/lib/x86_64-linux-gnu"
  printf -v "${1}_MODULE_DIR" '%s' "$_lab_root/usr/lib/x86_64-linux-gnu/qemu"
  _lab_dirs=("$_lab_root/usr/share/qemu" "$_lab_root/usr/share/seabios" "$_lab_root/usr/lib/ipxe/qemu")
  _lab_l_args=()
  for _lab_d in "${_lab_dirs[@]}"; do _lab_l_args+=(-L "$_lab_d"); done
}

LAB_QEMU_ROOT="$LAB_DIR/qemu"
lab_qemu_build LAB_QEMU "$LAB_QEMU_ROOT"

LAB_KERNEL_ROOT="$LAB_DIR/kernel"
LAB_KERNEL_VERSION=""
[[ -f "$LAB_KERNEL_ROOT/version" ]] && LAB_KERNEL_VERSION="$(<"$LAB_KERNEL_ROOT/version")"
LAB_KERNEL="$LAB_KERNEL_ROOT/boot/vmlinuz-$LAB_KERNEL_VERSION"
LAB_MODULES="$LAB_KERNEL_ROOT/lib/modules/$LAB_KERNEL_VERSION"

LAB_NEW_KERNEL_ROOT="$LAB_DIR/new-kernel"
LAB_NEW_KERNEL_VERSION=""
[[ -f "$LAB_NEW_KERNEL_ROOT/version" ]] && LAB_NEW_KERNEL_VERSION="$(<"$LAB_NEW_KERNEL_ROOT/version")"
LAB_NEW_KERNEL="$LAB_NEW_KERNEL_ROOT/$(cat "$LAB_NEW_KERNEL_ROOT/image" 2>/dev/null || echo vmlinuz)"
LAB_NEW_MODULES="$LAB_NEW_KERNEL_ROOT/lib/modules/$LAB_NEW_KERNEL_VERSION"

LAB_QEMU10_ROOT="$LAB_DIR/qemu10"
lab_qemu_build LAB_QEMU10 "$LAB_QEMU10_ROOT"

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
  if [[ ! -f "$LAB_READY" || ! -x "$LAB_QEMU" || ! -f "$LAB_KERNEL" || ! -x "$LAB_BUSYBOX" || ! -f "$LAB_NEW_KERNEL" ||
    ! -x "$LAB_QEMU10" ]]; then
    echo "lab: not set up in $LAB_DIR: run lab/setup first" >&2
    return 1
  fi
}
