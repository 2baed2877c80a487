#!/usr/bin/env bash
# Provide the container engines criu-aio's engine tests drive (tests/e2e/engines/),
# on a Debian 12 machine of the kind docs/engines-here.md describes:
#
#   podman 4.3.1 + conmon, runc 1.1.5, containerd 1.6 + ctr  Debian 12 packages (apt)
#   crun 1.21 with +CRIU, libcriu2 4.1.1                      Debian 13, private (below)
#   a busybox-static image, localhost/criu-aio/busybox        `podman import`
#
# Why crun is private: Debian 12's crun 1.8.1 is built without CRIU (`crun
# checkpoint` is unknown). Debian 13's crun 1.21 has it and loads libcriu.so.2
# with dlopen at run time; both need glibc >= 2.38. They are unpacked, with the
# closure of their library packages, into $PREFIX/crun/root (the private apt
# of scripts/lib/trixie-apt.sh, as provision-criu.sh does for CRIU) and the
# crun binary is copied to $PREFIX/crun/bin/crun with patchelf: interpreter =
# the root's ld-linux-x86-64.so.2, DT_RPATH = the root's library folders. RPATH
# (not RUNPATH) because it also serves libraries loaded on behalf of others:
# dlopen("libcriu.so.2") and libcriu's own libprotobuf-c. A patched binary
# rather than an ld.so wrapper script: crun then is its own /proc/self/exe.
#
# Machine facts this script applies (each one measured; see docs/engines-here.md):
#   - cgroup hybrid mode (v1 controllers + /sys/fs/cgroup/unified): crun refuses
#     "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"
#     while a controller is left to v2 (hugetlb here). Every controller listed in
#     unified/cgroup.controllers is mounted as cgroup v1 at /sys/fs/cgroup/NAME.
#     Not persistent: this script runs again at every set-up (fast when done).
#   - podman's default RLIMIT_NOFILE/NPROC exceed this sandbox's hard limits
#     (crun: "setrlimit RLIMIT_NOFILE: Operation not permitted"): default_ulimits.
#   - no systemd as PID 1: cgroup_manager cgroupfs, events_logger file.
#   - containers get no network (netns none): CRIU then dumps a netns with only lo.
#   - storage driver overlay (vfs where the storage folder is itself on overlayfs).
# These go into a PRIVATE configuration ($PREFIX/engines/{containers,storage,
# registries}.conf, storage under $PREFIX/engines/storage, run state under
# /run/criu-aio/engines) used through the wrapper $PREFIX/engines/bin/podman,
# which sets CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and
# CONTAINERS_REGISTRIES_CONF: the machine's own podman set-up is not touched.
# containerd is not started here: the tests start a private daemon per session.
#
# Idempotent; when everything is in place it only checks (well under a second).
# Needs root. Environment: CRIU_AIO_PREFIX (default /opt/criu-aio),
# CRIU_AIO_DEBIAN_MIRROR, CRIU_AIO_FORCE=1 (rebuild the private crun and image).
set -euo pipefail

PREFIX=${CRIU_AIO_PREFIX:-/opt/criu-aio}
SUITE=trixie
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
CRUN_DIR=$PREFIX/crun
CRUN=$CRUN_DIR/bin/crun
CRUN_VERSION=1.21
ENGINES=$PREFIX/engines
RUN_DIR=/run/criu-aio/engines
IMAGE=localhost/criu-aio/busybox:latest
HERE=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

# Debian 12 packages the engines need. Keep sorted; say why in the commit.
APT_PACKAGES=(
	busybox-static # the image's rootfs
	conmon         # podman's container monitor
	containerd     # 1.6, with ctr
	iptables       # CRIU locks a container's network with iptables-restore
	patchelf       # points the private crun at its own ld.so and libraries
	podman         # 4.3.1
	runc           # 1.1.5
)

say() { printf 'provision-engines: %s\n' "$*"; }
die() {
	printf 'provision-engines: error: %s\n' "$*" >&2
	exit 1
}

# --- checks (also the fast path) -------------------------------------------------

apt_missing() {
	local pkg
	for pkg in "${APT_PACKAGES[@]}"; do
		[[ $(dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] ||
			printf '%s\n' "$pkg"
	done
}

# crun_ok [BIN]: BIN is crun $CRUN_VERSION built with +CRIU, and the libcriu.so.2
# it will dlopen (from its RPATH) resolves every library it needs there.
crun_ok() {
	local bin=${1:-$CRUN} out ld rpath
	[[ -x $bin ]] || return 1
	out=$("$bin" --version 2>/dev/null) || return 1
	grep -qx "crun version $CRUN_VERSION" <<<"$out" && grep -q '+CRIU' <<<"$out" || return 1
	ld=$(patchelf --print-interpreter "$bin") && rpath=$(patchelf --print-rpath "$bin") || return 1
	out=$("$ld" --library-path "$rpath" --list "${rpath%%:*}/libcriu.so.2" 2>&1) || return 1
	! grep -q 'not found' <<<"$out"
}

# v2_controllers: controllers cgroup v2 holds on a hybrid host (empty otherwise).
v2_controllers() {
	[[ $(stat -f -c %T /sys/fs/cgroup 2>/dev/null) == tmpfs ]] || return 0
	[[ -r /sys/fs/cgroup/unified/cgroup.controllers ]] || return 0
	tr ' ' '\n' </sys/fs/cgroup/unified/cgroup.controllers | sed '/^$/d'
}

podman_() { "$ENGINES/bin/podman" "$@"; }

image_ok() { [[ -x $ENGINES/bin/podman ]] && podman_ image exists "$IMAGE" 2>/dev/null; }

stamp() { cat "$HERE/provision-engines.sh" "$HERE/lib/trixie-apt.sh" | sha256sum | cut -d' ' -f1; }

# --- steps ------------------------------------------------------------------------

install_apt() {
	local missing
	mapfile -t missing < <(apt_missing)
	((${#missing[@]})) || return 0
	say "installing Debian 12 packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

mount_v2_controllers() {
	local ctrl
	for ctrl in $(v2_controllers); do
		say "cgroup hybrid mode: mounting $ctrl as cgroup v1 at /sys/fs/cgroup/$ctrl (crun refuses while cgroup v2 holds a controller)"
		mkdir -p "/sys/fs/cgroup/$ctrl"
		mount -t cgroup -o "$ctrl" cgroup "/sys/fs/cgroup/$ctrl" ||
			die "cannot mount the $ctrl cgroup v1 hierarchy; crun will refuse hybrid mode"
	done
	[[ -z $(v2_controllers) ]] || die "cgroup v2 still holds: $(v2_controllers | tr '\n' ' ')"
}

# patch_crun SRC ROOT OUT: OUT is a copy of SRC started by ROOT's ld.so, with
# ROOT's library folders as its RPATH.
patch_crun() {
	local src=$1 root=$2 out=$3
	mkdir -p "$(dirname "$out")"
	cp "$src" "$out"
	patchelf --set-interpreter "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
		--force-rpath --set-rpath "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" "$out"
}

install_crun() {
	local stage pkgs
	APT_DIR=$PREFIX/apt
	# shellcheck source=SCRIPTDIR/lib/trixie-apt.sh
	. "$HERE/lib/trixie-apt.sh"
	apt_setup
	mapfile -t pkgs < <(lib_closure crun libcriu2)
	say "fetching ${#pkgs[@]} packages from $SUITE: ${pkgs[*]}"
	# Build in a staging folder and swap it in only once it works.
	stage=$(mktemp -d "$PREFIX/.crun-stage.XXXXXX")
	# shellcheck disable=SC2064 # expand now: the trap outlives this function
	trap "rm -rf '$stage'" EXIT
	fetch_unpack "$stage" "${pkgs[@]}"
	patch_crun "$stage/root/usr/bin/crun" "$stage/root" "$stage/check/crun"
	crun_ok "$stage/check/crun" || die "the unpacked crun is not crun $CRUN_VERSION +CRIU with a loadable libcriu"
	rm -rf "$stage/check"
	patch_crun "$stage/root/usr/bin/crun" "$CRUN_DIR/root" "$stage/bin/crun"
	rm -rf "$CRUN_DIR.old"
	[[ -e $CRUN_DIR ]] && mv "$CRUN_DIR" "$CRUN_DIR.old"
	mv "$stage" "$CRUN_DIR"
	chmod 0755 "$CRUN_DIR"
	trap - EXIT
	rm -rf "$CRUN_DIR.old"
	crun_ok || die "$CRUN does not work after install"
}

storage_driver() {
	mkdir -p "$ENGINES/storage"
	if [[ $(stat -f -c %T "$ENGINES/storage") == overlayfs ]]; then echo vfs; else echo overlay; fi
}

write_config() {
	mkdir -p "$ENGINES/bin" "$RUN_DIR"
	cat >"$ENGINES/containers.conf" <<-EOF
		# Written by scripts/provision-engines.sh (see docs/engines-here.md).
		[containers]
		# podman's defaults (nofile 1048576) exceed this machine's hard limits.
		default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
		# No network of its own beyond lo: nothing for CRIU to lock but lo.
		netns = "none"

		[engine]
		# PID 1 is not systemd here.
		cgroup_manager = "cgroupfs"
		events_logger = "file"
		tmp_dir = "$RUN_DIR/libpod"
		runtime = "crun"

		[engine.runtimes]
		# Debian 13's crun 1.21 (+CRIU), unpacked privately; Debian 12's runc 1.1.5.
		crun = ["$CRUN"]
		runc = ["/usr/bin/runc"]
	EOF
	cat >"$ENGINES/storage.conf" <<-EOF
		# Written by scripts/provision-engines.sh (see docs/engines-here.md).
		[storage]
		driver = "$(storage_driver)"
		graphroot = "$ENGINES/storage"
		runroot = "$RUN_DIR/storage"
	EOF
	cat >"$ENGINES/registries.conf" <<-EOF
		# Written by scripts/provision-engines.sh: images are local (podman import), never pulled.
		unqualified-search-registries = []
	EOF
	cat >"$ENGINES/bin/podman" <<-EOF
		#!/bin/sh
		# Written by scripts/provision-engines.sh: podman with criu-aio's private
		# engine configuration (docs/engines-here.md). PATH passes through: it
		# decides which \`criu\` podman, conmon and the runtime start.
		export CONTAINERS_CONF=$ENGINES/containers.conf
		export CONTAINERS_STORAGE_CONF=$ENGINES/storage.conf
		export CONTAINERS_REGISTRIES_CONF=$ENGINES/registries.conf
		exec /usr/bin/podman "\$@"
	EOF
	chmod 0755 "$ENGINES/bin/podman"
}

make_image() {
	local rootfs applet
	rootfs=$(mktemp -d)
	mkdir -p "$rootfs/bin" "$rootfs/work"
	cp /bin/busybox "$rootfs/bin/busybox"
	for applet in sh sleep cat ls; do ln -s busybox "$rootfs/bin/$applet"; done
	tar -C "$rootfs" --numeric-owner -cf "$rootfs.tar" .
	podman_ import --quiet "$rootfs.tar" "$IMAGE" >/dev/null
	rm -rf "$rootfs" "$rootfs.tar"
	podman_ image prune --force >/dev/null # a previous import's image, now untagged
	# The same image as an OCI archive, for `ctr images import` (containerd has
	# its own content store; the tests import it into their private daemon).
	rm -f "$ENGINES/busybox.oci.tar"
	podman_ save --quiet --format oci-archive -o "$ENGINES/busybox.oci.tar" "$IMAGE"
}

# --- main -------------------------------------------------------------------------

[[ $(uname -m) == x86_64 ]] || die "only x86_64 is supported (this is $(uname -m))"
((EUID == 0)) || die "run as root: the engines, cgroup mounts and $PREFIX need it"
for tool in apt-get dpkg dpkg-deb flock; do
	command -v "$tool" >/dev/null || die "$tool not found: this script needs a Debian system"
done

mkdir -p "$PREFIX"
exec 9>"$PREFIX/.lock"
flock 9

install_apt
mount_v2_controllers

if [[ -z ${CRIU_AIO_FORCE:-} && -r $ENGINES/STAMP && $(<"$ENGINES/STAMP") == "$(stamp)" ]] &&
	crun_ok && image_ok && [[ -s $ENGINES/busybox.oci.tar ]]; then
	say "already provisioned: crun $CRUN_VERSION +CRIU ($CRUN), podman $(podman --version | awk '{print $3}'), $IMAGE"
	exit 0
fi

if [[ -n ${CRIU_AIO_FORCE:-} ]] || ! crun_ok; then
	install_crun
fi
write_config
if [[ -n ${CRIU_AIO_FORCE:-} ]] || ! image_ok || [[ ! -s $ENGINES/busybox.oci.tar ]]; then
	make_image
fi
image_ok || die "podman does not list $IMAGE after import"
stamp >"$ENGINES/STAMP"
say "crun: $CRUN ($("$CRUN" --version | head -n1), +CRIU; packages in $CRUN_DIR/PACKAGES)"
say "podman: $ENGINES/bin/podman (configuration in $ENGINES), image $IMAGE"
say "containerd: $(containerd --version | awk '{print $3}'), image archive $ENGINES/busybox.oci.tar"
say "done"
