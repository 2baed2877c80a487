#!/bin/sh
# Build criu-aio-probe, the static probe agent (agent/criu-aio-probe.c), and
# optionally install it.
#
#   scripts/build-agent.sh                 -> agent/criu-aio-probe (found by criu-aio
#                                             in a source checkout, see find_agent)
#   scripts/build-agent.sh --install [DIR] -> DIR/criu-aio-probe (default /usr/local/bin)
#
# The binary is static (gcc -static -Os, glibc's libc.a from libc6-dev): copy it
# to any x86_64 Linux host and probe it with
#   criu-aio check --aio-only --kernel 'agent:ssh HOST /path/criu-aio-probe'
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
command -v "${CC:-gcc}" >/dev/null || { echo "build-agent: ${CC:-gcc} not found (apt-get install gcc libc6-dev)" >&2; exit 1; }
make -s -C "$root/agent"
if [ "${1:-}" = "--install" ]; then
    dir=${2:-/usr/local/bin}
    install -D -m 0755 "$root/agent/criu-aio-probe" "$dir/criu-aio-probe"
    echo "$dir/criu-aio-probe"
else
    echo "$root/agent/criu-aio-probe"
fi
