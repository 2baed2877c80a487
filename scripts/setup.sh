#!/usr/bin/env bash
# Set up everything criu-aio needs on a fresh Debian 12 machine, as root:
#   1. apt packages: compiler and static libc for the test bed's holder,
#      Python venv support, busybox-static and runc for container tests;
#   2. a working CRIU >= 4.0 and Debian's pycriu (scripts/provision-criu.sh);
#      the container engines the engine tests drive: podman, crun with CRIU,
#      runc, containerd (scripts/provision-engines.sh, docs/engines-here.md);
#   3. a virtualenv at .venv with criu-aio installed editable with its test
#      dependencies (pip install -e '.[test]'; this compiles protos/);
#   4. `criu-aio` on PATH: a launcher (install-shim) at /usr/local/bin/criu-aio;
#   5. /etc/criu-aio/config.toml naming the CRIU provisioned in step 2, so that
#      criu-aio finds it from any environment (runtimes pass none). A config
#      someone edited is never overwritten (set-up records a checksum of what
#      it wrote and rewrites only an unedited file).
# Idempotent: a second run skips apt when every package is there, provisioning
# when CRIU works, and pip when nothing that shapes the install changed.
#
# usage, as root:  bash scripts/setup.sh && criu-aio demo   (then: bash scripts/test.sh)
#        or:       sudo bash scripts/setup.sh && sudo criu-aio demo
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

((EUID == 0)) || die "run as root: bash scripts/setup.sh as root, or sudo bash scripts/setup.sh"
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

# --- 2. CRIU and container engines ------------------------------------------------
bash "$ROOT/scripts/provision-criu.sh"
bash "$ROOT/scripts/provision-engines.sh"

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

# --- 4. criu-aio on PATH -----------------------------------------------------------
# A launcher (python -IS, this venv's paths recorded), written again on every run
# since it names this venv's Python. install-shim never replaces a file that is
# not criu-aio's.
BIN_DIR=${CRIU_AIO_SETUP_BIN:-/usr/local/bin} # (the variables: for set-up's own tests)
if "$VENV/bin/criu-aio" install-shim --dir "$BIN_DIR" --name criu-aio >/dev/null; then
	say "criu-aio on PATH: $BIN_DIR/criu-aio"
else
	say "warning: left $BIN_DIR/criu-aio alone (not criu-aio's); use $VENV/bin/criu-aio"
fi

# --- 5. /etc/criu-aio/config.toml ---------------------------------------------------
CRIU_PATH=$(cat /opt/criu-aio/criu-path)
CONFIG=${CRIU_AIO_SETUP_CONFIG:-/etc/criu-aio/config.toml}
config_body() {
	cat <<EOF
# criu-aio's settings, read by every entry point (criu-aio swrk and service, the
# \`criu\` launcher, the command line). Command-line options and CRIU_AIO_*
# variables override what is here; \`criu-aio config\` shows the effective
# settings and where each comes from. Keys: criu, kernel, check_policy, log,
# log_level (see docs/install-as-criu.md).

# The real CRIU criu-aio hands over to (set up by scripts/provision-criu.sh).
criu = "$CRIU_PATH"

# kernel = "live"          # or "sim:cpus=64": judge for another host (never rewrites)
# check_policy = "formula" # what fails a CHECK: formula, host, off
# log = "auto"             # syslog if /dev/log answers, else /var/log/criu-aio/criu-aio.log
# log_level = "info"       # debug, info, warning, error
EOF
}
body=$(config_body)
sum=$(printf '%s\n' "$body" | sha256sum | cut -d' ' -f1)
write_config() {
	mkdir -p "$(dirname "$CONFIG")"
	{
		printf "# Written by criu-aio's scripts/setup.sh (setup-sha256 %s)." "$sum"
		printf ' Edit freely: set-up then leaves it alone.\n%s\n' "$body"
	} >"$CONFIG.tmp.$$"
	chmod 0644 "$CONFIG.tmp.$$"
	mv -f "$CONFIG.tmp.$$" "$CONFIG"
}
if [[ ! -e $CONFIG ]]; then
	write_config
	say "wrote $CONFIG (criu = $CRIU_PATH)"
else
	# Rewritten only when it is still exactly what set-up wrote (its checksum).
	recorded=$(head -n1 "$CONFIG" | sed -n 's/.*(setup-sha256 \([0-9a-f]*\)).*/\1/p')
	current=$(tail -n +2 "$CONFIG" | sha256sum | cut -d' ' -f1)
	if [[ -n $recorded && $recorded == "$current" ]]; then
		[[ $recorded == "$sum" ]] || say "updated $CONFIG (criu = $CRIU_PATH)"
		write_config
	else
		say "kept $CONFIG: someone edited it, so set-up leaves it as it is"
	fi
fi

say "criu-aio: $("$VENV/bin/criu-aio" --version)"
CRIU_AIO_CONFIG=$CONFIG "$VENV/bin/criu-aio" config | sed 's/^/setup:   /' ||
	say "warning: \`criu-aio config\` reports a problem (above)"
say "done; see it work: criu-aio demo; run the tests: bash scripts/test.sh"
