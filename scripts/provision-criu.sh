#!/usr/bin/env bash
# Provide a working CRIU >= 4.0 for criu-aio's tests and users, without touching
# the system's apt state or /usr/sbin/criu.
#
# Why: Debian 12's CRIU 3.17.1 fails `criu check` on recent kernels ("vdso:
# Unexpected rt vDSO area bounds"). Debian 13's CRIU 4.1.1 works, but its binary
# needs glibc >= 2.38. So, unless a `criu` on PATH already passes `criu check`
# and is >= 4.0, this script fetches the trixie packages of criu and the closure
# of its library dependencies (libc6 included) with a PRIVATE apt configuration
# (its own sources list, state and cache under $PREFIX/apt, the system keyring),
# unpacks them with `dpkg -x` into $PREFIX/criu/root and writes a launcher,
# $PREFIX/criu/bin/criu, that starts the unpacked criu through the unpacked
# ld-linux-x86-64.so.2 --library-path: nothing like LD_LIBRARY_PATH leaks into
# the tools CRIU runs or into the processes it restores.
#
# It always also unpacks Debian 13's python3-pycriu (pure Python: pycriu.criu,
# the RPC client, and pycriu.images, the image codec), which the tests use as an
# independent tool, and python3-protobuf 3.21 from the same suite. pycriu does
# NOT work with the protobuf 7.x runtime criu-aio installs from PyPI: its
# pb2dict reads FieldDescriptor.label, which protobuf 7 removed. So pycriu runs
# in its own minimal environment: any Python 3.11+ started with -S (no
# site-packages) and PYTHONPATH set to the folder below. Debian's protobuf then
# uses its pure-Python implementation (its C extension is built for Python
# 3.13), which is all pycriu needs.
#
# Results (read by scripts/test.sh, tests/conftest.py and the docs):
#   $PREFIX/criu-path    path of the working criu (the launcher or the system one)
#   $PREFIX/pycriu-path  folder to put on PYTHONPATH (with python3 -S) for pycriu
#
# Idempotent; when everything is already in place it only re-runs `criu check`
# (well under a second). Needs root (CRIU does). Environment:
#   CRIU_AIO_PREFIX         default /opt/criu-aio
#   CRIU_AIO_DEBIAN_MIRROR  default: the mirror the system's apt sources use
#   CRIU_AIO_FORCE=1        rebuild the private CRIU even if one works
#   CRIU_AIO_PRIVATE=1      use the private CRIU even if a system one works
set -euo pipefail

PREFIX=${CRIU_AIO_PREFIX:-/opt/criu-aio}
SUITE=trixie
MIN_MAJOR=4
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
ROOTFS=$PREFIX/criu/root
LAUNCHER=$PREFIX/criu/bin/criu
PYCRIU_DIR=$ROOTFS/usr/lib/python3/dist-packages

say() { printf 'provision-criu: %s\n' "$*"; }
die() {
	printf 'provision-criu: error: %s\n' "$*" >&2
	exit 1
}

# criu_works PATH: PATH runs, is CRIU >= MIN_MAJOR and `criu check` says "Looks good."
criu_works() {
	local bin=$1 ver major out
	[[ -x $bin ]] || return 1
	ver=$("$bin" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1) || return 1
	major=${ver%%.*}
	[[ $major =~ ^[0-9]+$ ]] && ((major >= MIN_MAJOR)) || return 1
	out=$("$bin" check 2>&1) || return 1
	grep -q 'Looks good\.' <<<"$out" || return 1
	CRIU_VERSION=$ver
}

# is_criu_aio PATH: PATH is criu-aio installed under the name criu (a symlink to
# the console script or a wrapper around it). Its `check` would recurse into us.
is_criu_aio() {
	local real
	real=$(readlink -f -- "$1") || return 1
	[[ $(basename -- "$real") == criu-aio ]] && return 0
	# Same rule as criu_aio_plugin/criu_locate.py: a script importing the package
	# or running `criu-aio` as a command ("criu-aio" as a folder name is not one).
	[[ $(head -c 2 -- "$real" 2>/dev/null) == '#!' ]] || return 1
	head -c 65536 -- "$real" | grep -aqE \
		-e 'criu_aio_plugin' -e '(^|[^[:alnum:]_.-])criu-aio([^[:alnum:]_./-]|$)'
}

# pycriu_ok [DIR]: pycriu and its protobuf import from DIR in an isolated python3.
pycriu_ok() {
	local dir=${1:-$PYCRIU_DIR}
	[[ -f $dir/pycriu/images/mm_pb2.py && -f $dir/google/protobuf/__init__.py ]] || return 1
	PYTHONPATH=$dir PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python \
		python3 -S -c 'import pycriu.images.pb2dict, pycriu.images.mm_pb2' 2>/dev/null
}

write_results() {
	local criu=$1 tmp
	tmp=$(mktemp "$PREFIX/.criu-path.XXXXXX")
	printf '%s\n' "$criu" >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$PREFIX/criu-path"
	tmp=$(mktemp "$PREFIX/.pycriu-path.XXXXXX")
	printf '%s\n' "$PYCRIU_DIR" >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$PREFIX/pycriu-path"
}

# --- private apt (scripts/lib/trixie-apt.sh) -----------------------------------

APT_DIR=$PREFIX/apt
# shellcheck source=SCRIPTDIR/lib/trixie-apt.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/trixie-apt.sh"

write_launcher() {
	local dest=$1 final_root=$2 ld libs
	ld=$final_root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
	libs=$final_root/usr/lib/x86_64-linux-gnu:$final_root/lib/x86_64-linux-gnu
	mkdir -p "$dest/bin"
	# --library-path instead of LD_LIBRARY_PATH: the loader uses it for criu
	# alone, so tools CRIU spawns (iptables, ip, action scripts) and restored
	# processes see the environment they would see with a system CRIU.
	cat >"$dest/bin/criu" <<-EOF
		#!/bin/sh
		# Written by scripts/provision-criu.sh: Debian $SUITE's CRIU with its
		# own libraries, started through its own dynamic loader.
		exec $ld --argv0 criu --library-path $libs $final_root/usr/sbin/criu "\$@"
	EOF
	chmod 0755 "$dest/bin/criu"
}

# --- main ---------------------------------------------------------------------

[[ $(uname -m) == x86_64 ]] || die "only x86_64 is supported (this is $(uname -m))"
((EUID == 0)) || die "run as root (sudo $0): CRIU needs root, and $PREFIX is system-wide"
for tool in apt-get apt-cache dpkg dpkg-deb flock; do
	command -v "$tool" >/dev/null || die "$tool not found: this script needs a Debian system"
done

mkdir -p "$PREFIX"
exec 9>"$PREFIX/.lock"
flock 9

# Fast path: a previous run left a CRIU that still passes its check.
if [[ -z ${CRIU_AIO_FORCE:-} && -r $PREFIX/criu-path ]] && pycriu_ok; then
	recorded=$(<"$PREFIX/criu-path")
	if criu_works "$recorded" && { [[ $recorded == "$LAUNCHER" ]] || [[ -z ${CRIU_AIO_PRIVATE:-} ]]; }; then
		say "already provisioned: $recorded (CRIU $CRIU_VERSION, criu check: Looks good.)"
		say "pycriu: PYTHONPATH=$PYCRIU_DIR python3 -S ..."
		exit 0
	fi
fi

# A system CRIU that works is used as is (never replaced).
use_system=
if [[ -z ${CRIU_AIO_PRIVATE:-} ]] && sys_criu=$(command -v criu); then
	if is_criu_aio "$sys_criu"; then
		say "the criu on PATH ($sys_criu) is criu-aio itself; looking past it"
	elif criu_works "$sys_criu"; then
		say "system CRIU works: $sys_criu (CRIU $CRIU_VERSION); using it"
		use_system=$sys_criu
	else
		say "system CRIU $sys_criu is older than $MIN_MAJOR.0 or fails 'criu check'; not touching it"
	fi
fi

if [[ -n $use_system && -z ${CRIU_AIO_FORCE:-} ]] && pycriu_ok; then
	write_results "$use_system"
	say "done: criu-path -> $use_system"
	exit 0
fi

apt_setup

if [[ -n $use_system ]]; then
	pkgs=(python3-pycriu python3-protobuf)
else
	mapfile -t pkgs < <(lib_closure criu)
	pkgs+=(python3-pycriu python3-protobuf)
fi
say "fetching ${#pkgs[@]} packages from $SUITE: ${pkgs[*]}"

# Build in a staging folder and swap it in only once it works, so an interrupted
# run never leaves a half-unpacked CRIU behind the recorded path.
stage=$(mktemp -d "$PREFIX/.criu-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
fetch_unpack "$stage" "${pkgs[@]}"
pycriu_ok "$stage/root/usr/lib/python3/dist-packages" ||
	die "pycriu from $SUITE does not import with python3 -S and its own protobuf"

if [[ -z $use_system ]]; then
	[[ -x $stage/root/usr/sbin/criu ]] || die "criu did not unpack to usr/sbin/criu"
	[[ -x $stage/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 ]] ||
		die "libc6 did not unpack a dynamic loader"
	# Check the staged copy through a launcher pointing into the stage.
	write_launcher "$stage/check" "$stage/root"
	if ! criu_works "$stage/check/bin/criu"; then
		"$stage/check/bin/criu" check >&2 || true
		die "the unpacked CRIU does not pass 'criu check' on this kernel ($(uname -r))"
	fi
	rm -rf "$stage/check"
	write_launcher "$stage" "$ROOTFS"
fi

rm -rf "$PREFIX/criu.old"
[[ -e $PREFIX/criu ]] && mv "$PREFIX/criu" "$PREFIX/criu.old"
mv "$stage" "$PREFIX/criu"
chmod 0755 "$PREFIX/criu"
trap - EXIT
rm -rf "$PREFIX/criu.old"

if [[ -n $use_system ]]; then
	final=$use_system
else
	final=$LAUNCHER
	criu_works "$final" || die "$final does not pass 'criu check' after install"
fi
write_results "$final"
say "installed into $PREFIX/criu: $(wc -l <"$PREFIX/criu/PACKAGES") packages (list in $PREFIX/criu/PACKAGES)"
say "criu: $final (CRIU $CRIU_VERSION, criu check: Looks good.)"
say "pycriu: PYTHONPATH=$PYCRIU_DIR python3 -S ..."
say "done: $PREFIX/criu-path -> $final"
