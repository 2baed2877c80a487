#!/bin/sh
# runc + criu-aio, end to end: a busybox container holding AIO rings is
# checkpointed, its nr_req made wrong (as another CRIU build writes it), and
# restored with `runc --criu <criu-aio launcher>` (runc 1.1; for runc >= 1.2,
# put the launcher's folder first on PATH instead, see docs/install-as-criu.md).
#
#   sudo sh examples/runc/demo.sh            (from the repository's top folder)
#
# Needs: runc, busybox-static, gcc, a CRIU >= 4 ($CRIU_AIO_CRIU or the one
# scripts/provision-criu.sh recorded), Debian's pycriu (to forge the images).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
criu=${CRIU_AIO_CRIU:-$(cat /opt/criu-aio/criu-path)}
pycriu=$(cat /opt/criu-aio/pycriu-path)
work=$(mktemp -d /tmp/criu-aio-runc-demo.XXXXXX)
name=criu-aio-demo-$$
export CRIU_AIO_CRIU="$criu" CRIU_AIO_LOG="$work/criu-aio.log"

mkdir -p "$work/bundle/rootfs/bin" "$work/shared/reports"
cp "$(command -v busybox)" "$work/bundle/rootfs/bin/busybox"
ln -s busybox "$work/bundle/rootfs/bin/sh"
ln -s busybox "$work/bundle/rootfs/bin/sleep"
gcc -static -O2 -o "$work/bundle/rootfs/holder" "$top/criu_aio_plugin/demo/holder.c"
python3 -c "open('$work/shared/data.bin','wb').write(bytes(i % 251 for i in range(1 << 20)))"
cd "$work/bundle"
runc spec
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
path = f"{work}/bundle/config.json"
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/sh", "-c", "exec </dev/null >/dev/null 2>&1; "
    "/holder /work/reports /work/data.bin -r 381:1 -r 190 && exec sleep 1000000"]
c["root"]["readonly"] = False
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
c["mounts"].append({"destination": "/work", "type": "bind", "source": f"{work}/shared",
                    "options": ["rbind", "rw"]})
json.dump(c, open(path, "w"))
PY
runc run -d "$name" </dev/null
sleep 1
echo "== checkpoint with the real CRIU"
runc --criu "$criu" checkpoint --image-path "$work/images" --work-path "$work/w0" "$name"
echo "== forge nr_req in $(ls "$work"/images/mm-*.img | tr '\n' ' ')"
for mm in "$work"/images/mm-*.img; do
	PYTHONPATH="$pycriu" python3 -S "$top/tests/testbed/pycriu_tool.py" aios "$mm" |
		python3 -c 'import json,sys; print(" ".join("%#x=%d" % (a["id"], (a["ring_len"]-32)//32-2) for a in json.load(sys.stdin)))' |
		xargs -r env PYTHONPATH="$pycriu" python3 -S "$top/tests/testbed/pycriu_tool.py" set-nr-req "$mm"
done
echo "== restore with CRIU alone (fails: wrong aio)"
runc --criu "$criu" restore -d --image-path "$work/images" --work-path "$work/w1" "$name" </dev/null || true
grep -o 'wrong aio.*' "$work/w1/restore.log" || true
runc delete -f "$name" 2>/dev/null || true
echo "== restore through criu-aio"
criu-aio install-shim --dir "$work/shim" >/dev/null
runc --criu "$work/shim/criu" restore -d --image-path "$work/images" --work-path "$work/w2" "$name" </dev/null
runc ps "$name"
cat "$work/criu-aio.log"
runc kill "$name" KILL
sleep 0.5
runc delete -f "$name"
echo "(work folder: $work)"
