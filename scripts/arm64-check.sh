#!/usr/bin/env bash
# arm64 as a checked platform: the torch-free install on a Debian bookworm arm64 userland
# under qemu-user, emulating a Cortex-A72 (Raspberry Pi 4) and a Cortex-A76 (Raspberry Pi 5).
# It runs `info`, `predict` and `bench` on exported fp32, fp16, int8 and waveform-in models and
# compares the probabilities with x86: same top-1, max |dp| <= 1e-4.
#
#   sudo bash scripts/arm64-check.sh [OUT_DIR]        (default: arm64-check/)
#
# Needs root (debootstrap, chroot, a private mount namespace), Debian's debootstrap and
# qemu-user-static (installed with apt-get when missing), binfmt_misc, and the workstation
# install (.venv, scripts/setup.sh) to train and export the models. The userland is kept in
# $EDGEASC_ARM64_ROOT (default ~/.cache/edgeasc/arm64-bookworm) and reused. Emulated
# timings are not Pi timings. Exit code: 0 all checks pass, 1 a check failed, 2 set-up failed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$(realpath -m "${1:-arm64-check}")
ROOTFS=${EDGEASC_ARM64_ROOT:-$HOME/.cache/edgeasc/arm64-bookworm}
MIRROR=${EDGEASC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CPUS=${EDGEASC_ARM64_CPUS:-"cortex-a72 cortex-a76"}
PY=${PYTHON:-$REPO/.venv/bin/python}
fail() { echo "arm64-check: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot, mount namespaces)"
[ -x "$PY" ] || fail "no workstation install at $PY: run scripts/setup.sh first (or set PYTHON)"
if ! command -v debootstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ]; then
    apt-get install -y -q debootstrap qemu-user-static >/dev/null || fail "cannot install debootstrap and qemu-user-static"
fi
# binfmt_misc runs aarch64 binaries through qemu; F (fix binary) makes it work inside the chroot
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || fail "binfmt_misc is not available"
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || fail "no $conf (qemu-user-static)"
    cat "$conf" > /proc/sys/fs/binfmt_misc/register || fail "cannot register qemu-aarch64 with binfmt_misc"
fi

if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    echo "arm64-check: building a bookworm arm64 userland in $ROOTFS (a few minutes)"
    mkdir -p "$ROOTFS"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$ROOTFS" "$MIRROR" >/dev/null || fail "debootstrap failed"
fi

# wheels for the guest: manylinux_2_28 tags, or pip quietly picks old ones (onnxruntime 1.16,
# a soundfile without libsndfile); onnxruntime 1.21.0 dies on a Cortex-A72 and is excluded by
# the package's own dependency spec
WHEELS=$ROOTFS/opt/wheels
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" . >/dev/null || fail "cannot build the edgeasc wheel"
DEPS=$("$PY" - <<'EOF'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
EOF
)
mapfile -t DEP_LIST <<< "$DEPS"
"$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    -d "$WHEELS" "${DEP_LIST[@]}" 2>/dev/null || fail "cannot download the aarch64 wheels"
chroot "$ROOTFS" /bin/sh -c "rm -rf /opt/edgeasc && python3 -m venv /opt/edgeasc && \
    /opt/edgeasc/bin/pip install -q --no-index --find-links /opt/wheels edgeasc" || fail "cannot install edgeasc in the guest"

echo "arm64-check: training and exporting the models on x86"
rm -rf "$OUT" && mkdir -p "$OUT"
"$PY" scripts/arm64_check.py prepare "$OUT"
GUEST=$ROOTFS/opt/check
rm -rf "$GUEST" && mkdir -p "$GUEST" && cp -r "$OUT"/model-*.onnx "$OUT"/audio "$OUT"/files.txt "$GUEST"/

for cpu in $CPUS; do
    echo "arm64-check: emulating $cpu"
    # onnxruntime reads /proc/cpuinfo at import and crashes on the host's x86 one: the guest
    # gets an arm64 one, in a private mount namespace that disappears with the check
    cat > "$OUT/cpuinfo-$cpu" <<EOF
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid$( [ "$cpu" = cortex-a76 ] && echo " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp" )
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: $( [ "$cpu" = cortex-a76 ] && echo 0x4 || echo 0x0 )
CPU part	: $( [ "$cpu" = cortex-a76 ] && echo 0xd0b || echo 0xd08 )
CPU revision	: 1

EOF
    unshare --mount --propagation private /bin/sh -e -c "
        mount -t proc proc '$ROOTFS/proc'
        mount --bind '$OUT/cpuinfo-$cpu' '$ROOTFS/proc/cpuinfo'
        QEMU_CPU=$cpu chroot '$ROOTFS' /opt/edgeasc/bin/python - <<'EOF' > '$OUT/arm64-$cpu.json'
import json, subprocess
files = open('/opt/check/files.txt').read().split()
def run(*args):
    proc = subprocess.run(['/opt/edgeasc/bin/edgeasc', *args], capture_output=True, text=True, cwd='/opt/check')
    if proc.returncode != 0:
        raise SystemExit('edgeasc ' + ' '.join(args) + ' failed: ' + proc.stderr[-1500:])
    return proc.stdout
out = {}
for name in ('fp32', 'fp16', 'int8', 'waveform-in'):
    model = f'model-{name}.onnx'
    info = json.loads(run('info', model, '--json'))
    bench = json.loads(run('bench', model, '--runs', '3', '--warmup', '1', '--json'))
    out[name] = {'predict': json.loads(run('predict', model, *files, '--hop', '1', '--json')),
                 'bench': bench['results'][0]['latency_ms']['p50'], 'info_labels': info.get('labels'),
                 'machine': bench['machine']}
print(json.dumps(out))
EOF
    " || { echo "arm64-check: the guest run on $cpu failed" >&2; exit 1; }
done
"$PY" scripts/arm64_check.py compare "$OUT" $CPUS
