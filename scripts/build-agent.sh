#!/bin/sh
# Build criu-aio-probe, the static probe agent (agent/criu-aio-probe.c). The one
# place its compiler flags live (agent/Makefile calls this).
#
#   scripts/build-agent.sh                 -> agent/criu-aio-probe (found by criu-aio
#                                             in a source checkout, see find_agent)
#   scripts/build-agent.sh --out PATH      -> PATH (rebuilt only when older than the source)
#   scripts/build-agent.sh --install [DIR] -> DIR/criu-aio-probe (default /usr/local/bin)
#
# Needs only gcc and glibc's static archive (libc6-dev). The binary is static:
# copy it to any x86_64 Linux host and probe it with
#   criu-aio check --aio-only --kernel 'agent:ssh HOST /path/criu-aio-probe'
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/agent/criu-aio-probe.c
out=$root/agent/criu-aio-probe
install_dir=
case "${1:-}" in
--out) out=${2:?--out needs a path} ;;
--install) install_dir=${2:-/usr/local/bin} ;;
"") ;;
*) echo "usage: build-agent.sh [--out PATH | --install [DIR]]" >&2; exit 2 ;;
esac
cc=${CC:-gcc}
command -v "$cc" >/dev/null || { echo "build-agent: $cc not found (apt-get install gcc libc6-dev)" >&2; exit 1; }
if [ ! -x "$out" ] || [ "$src" -nt "$out" ] || [ "$0" -nt "$out" ]; then
    mkdir -p "$(dirname "$out")"
    "$cc" -Os -Wall -Wextra -Werror -std=gnu11 -o "$out.tmp" "$src" -static -s
    mv -f "$out.tmp" "$out"
fi
if [ -n "$install_dir" ]; then
    install -D -m 0755 "$out" "$install_dir/criu-aio-probe"
    echo "$install_dir/criu-aio-probe"
else
    echo "$out"
fi
