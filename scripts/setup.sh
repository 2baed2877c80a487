#!/usr/bin/env bash
# Set up everything criu-aio needs on a fresh Debian 12 machine, as root:
#   1. apt packages: compiler and static libc for the test bed's holder,
#      Python venv support, busybox-static and runc for container tests;
#   2. a working CRIU >= 4.0 and Debian's pycriu (scripts/provision-criu.sh);
#   3. a virtualenv at .venv with criu-aio installed editable with its test
#      dependencies (pip install -e '.[test]'; this compiles protos/).
# Idempotent: a second run skips apt when every package is there, provisioning
# when CRIU works, and pip when nothing that shapes the install changed.
#
# usage: sudo bash scripts/setup.sh        (then: bash scripts/test.sh)
# env:   PYTHON (default python3) is the interpreter the venv is made from.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
PYTHON=${PYTHON:-python3}

# What the project needs from Debian. Keep sorted; say why in the commit.
APT_PACKAGES=(
	busybox-static        # rootfs of test containers
	ca-certificates       # pip over https
	debian-archive-keyring # verifies the trixie suite provision-criu.sh reads
	gcc                   # builds the ring holder (criu_aio_plugin/demo/holder.c)
	libc6-dev             # headers, and libc.a for the static holder
	python3
	python3-pip
	python3-venv
	qemu-system-x86       # the kernel lab boots Debian kernels under TCG
	systemd               # systemd-socket-activate, for the service socket-activation test
	runc                  # container checkpoint/restore tests
	util-linux            # flock, used by provision-criu.sh
)

say() { printf 'setup: %s\n' "$*"; }
die() {
	printf 'setup: error: %s\n' "$*" >&2
	exit 1
}

((EUID == 0)) || die "run as root: sudo bash scripts/setup.sh"
command -v apt-get >/dev/null || die "this script sets up Debian (12, bookworm); no apt-get here"

# --- 1. apt ---------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
	[[ $(dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] ||
		missing+=("$pkg")
done
if ((${#missing[@]})); then
	say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
else
	say "apt packages: all present"
fi

# --- 2. CRIU ----------------------------------------------------------------------
bash "$ROOT/scripts/provision-criu.sh"

# --- 3. venv + package ------------------------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
	die "$PYTHON is $("$PYTHON" --version 2>&1); criu-aio needs Python >= 3.11 (set PYTHON=...)"
if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
	say "creating $VENV with $("$PYTHON" --version 2>&1)"
	rm -rf "$VENV"
	"$PYTHON" -m venv "$VENV"
fi

# Everything that decides what `pip install -e` produces; unchanged means done.
stamp=$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT"/protos/*.proto \
	"$ROOT/criu_aio_plugin/_proto/_compile.py" | sha256sum | cut -d' ' -f1)
if [[ -f $VENV/.criu-aio-stamp && $(<"$VENV/.criu-aio-stamp") == "$stamp" ]] &&
	"$VENV/bin/python" -c 'import criu_aio_plugin._proto.criu_aio_mm_pb2' 2>/dev/null &&
	[[ -x $VENV/bin/criu-aio ]]; then
	say "venv: criu-aio already installed in $VENV"
else
	say "installing criu-aio (editable, with test dependencies) into $VENV"
	"$VENV/bin/python" -m pip install -q --upgrade pip
	(cd "$ROOT" && "$VENV/bin/python" -m pip install -q -e '.[test]')
	printf '%s\n' "$stamp" >"$VENV/.criu-aio-stamp"
fi

say "criu-aio: $("$VENV/bin/criu-aio" --version)"
say "CRIU: $(cat /opt/criu-aio/criu-path)"
say "done; run the tests with: bash scripts/test.sh"
