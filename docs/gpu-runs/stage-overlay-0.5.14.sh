#!/usr/bin/env bash
# Stage an offline overlay that turns the SGLang 0.5.17 bundle (../shared/gpu/stage, installed in /tmp/lfm-site on
# the GPU host) into SGLang 0.5.14: the pins of sglang 0.5.14 that differ from the bundle's and that it imports at
# startup (as far as tried) -- sglang 0.5.14, transformers 5.8.1, flashinfer-python 0.6.12, apache-tvm-ffi 0.1.9 -- and
# sglang-kernel 0.4.4 (0.5.14 imports sgl_kernel.fp8_blockwise_scaled_mm, which 0.4.5 no longer has), reduced to its
# Hopper build as stage does for 0.4.5. Everything lands in /tmp/lfm-514, which goes BEFORE /tmp/lfm-site:
#     PYTHONPATH=/tmp/lfm-514:/tmp/lfm-site      (boot/env.sh sets it)
#
# usage (dev machine, repository root; ~3 min, downloads cached in ~/.cache/lfm-gpu-bundle):
#     bash docs/gpu-runs/stage-overlay-0.5.14.sh [OUT]       OUT defaults to .gpu/o514k (git-ignored)
#   -> OUT/parts/o.00 .. o.06 (7 parts at the last staging: 6 x 56 MiB + 28 MiB, 382 MB in all;
#      the script prints the count, and OUT/boot/NPARTS holds it) and OUT/boot (receive.sh, env.sh, SHA256SUMS,
#      NPARTS, the zstandard wheel).
#
# Copying to the GPU host (one part per copy, beside the checkout: a copy to the host holds at most 64 MiB, a part
# is <= 56 MiB and the project tree ~8 MB):
#   copies 1 .. N-1:  .gpu/o514k/parts/o.0K       (K = 0 .. N-2), then on the host
#                     mkdir -p /tmp/lfm-514-parts && cp .gpu/o514k/parts/o.* /tmp/lfm-514-parts/
#   last copy:        .gpu/o514k/parts/o.0<N-1> and .gpu/o514k/boot, then on the host
#                     bash .gpu/o514k/boot/receive.sh
#   (the script keeps the last part small enough that it fits together with boot/, 5.6 MB; the host must
#   have ~2 GB free in /tmp for the install.)
# receive.sh checks every part's sha256 (it names the missing or damaged ones), unpacks, installs the wheels with
# `pip install --no-index --no-deps --target /tmp/lfm-514`, copies the reduced sgl_kernel tree there, and prints
# "READY-0.5.14 ..." once sglang, sgl_kernel (with fp8_blockwise_scaled_mm), transformers and flashinfer import
# from /tmp/lfm-514. The 0.5.17 bundle must be READY in /tmp/lfm-site first (the overlay holds only what differs),
# and both live in the host's /tmp, so every copy must reach the same host while it stays up.
# Then every command on the host:   source .gpu/o514k/boot/env.sh
#
# Not in the overlay: 0.5.14's other differing pins, none of which the 0.5.17 bundle carries either (flashinfer-cubin,
# sgl-deep-gemm, flash-attn-4, tokenspeed-mla, tilelang, nvidia-cutlass-dsl, quack-kernels); whether 0.5.14 needs
# any of them on the host is untested.
set -euo pipefail
OUT=${1:-.gpu/o514k}
CACHE=${LFM_GPU_CACHE:-$HOME/.cache/lfm-gpu-bundle}
PINS=(sglang==0.5.14 transformers==5.8.1 flashinfer-python==0.6.12 apache-tvm-ffi==0.1.9)
KERNEL=0.4.4
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
      --platform manylinux1_x86_64 --platform any)
PART=$((56 * 1024 * 1024))
mkdir -p "$CACHE/o514" "$CACHE/kernel" "$CACHE/boot"
echo "downloading pinned wheels into $CACHE (cached between runs)"
python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$CACHE/o514" "${PINS[@]}"
python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$CACHE/kernel" "sglang-kernel==$KERNEL"
# the zstandard wheel the 0.5.17 staging already fetched (.gpu/boot or the cache); download only if neither has it
ls .gpu/boot/zstandard-0.25.0-*.whl "$CACHE"/boot/zstandard-0.25.0-*.whl >/dev/null 2>&1 ||
  python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$CACHE/boot" "zstandard==0.25.0"
ZWHL=$(ls .gpu/boot/zstandard-0.25.0-*.whl "$CACHE"/boot/zstandard-0.25.0-*.whl 2>/dev/null | head -1)

WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bundle/whl" "$WORK/bundle/kern"
# keep exactly the pinned versions (the cache may hold other downloads)
python3 - "$CACHE/o514" "$WORK/bundle/whl" "${PINS[@]}" <<'PY'
import re, shutil, sys, pathlib
have = list(pathlib.Path(sys.argv[1]).glob("*.whl"))
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
for pin in sys.argv[3:]:
    name, ver = pin.split("==")
    hits = [w for w in have if norm(w.name.split("-")[0]) == norm(name) and w.name.split("-")[1] == ver]
    if not hits:
        sys.exit(f"missing wheel for {pin}")
    shutil.copy(hits[0], sys.argv[2])
PY
# sgl-kernel 0.4.4: same layout as 0.4.5 (sgl_kernel/sm90/common_ops.abi3.so for Hopper, sgl_kernel/sm100/ for
# everything else, flash_ops.abi3.so = FlashAttention 3, needed on Hopper; flashmla_ops.abi3.so optional, imported
# in a try by flash_mla.py), except that it has no infllm_ops extension (the rm is a no-op) and that its flash_ops is
# bigger (1.76 GB unpacked vs 1.12 GB; ~360 MB of the 382 MB packed). Keep the Hopper build only.
(cd "$WORK/bundle/kern" && python3 -m zipfile -e "$CACHE"/kernel/sglang_kernel-$KERNEL-*.whl . \
  && rm -rf sgl_kernel/sm100 sgl_kernel/infllm_ops*.so sgl_kernel/flashmla_ops*.so)
K=$WORK/bundle/kern/sgl_kernel
[ -f "$K"/sm90/common_ops.abi3.so ] && [ -f "$K"/flash_ops.abi3.so ] || { echo "unexpected sglang-kernel $KERNEL layout"; exit 1; }
grep -q '^def fp8_blockwise_scaled_mm' "$K"/gemm.py && grep -q 'fp8_blockwise_scaled_mm' "$K"/__init__.py \
  || { echo "sglang-kernel $KERNEL lacks fp8_blockwise_scaled_mm"; exit 1; }
echo "packing (about 1.85 GB before compression; takes a few minutes)"
# -12 --long=27 instead of stage's -10: ~8% smaller on flash_ops (one part less); the 128 MiB window is
# zstd's default decoding limit, receive.sh allows it explicitly. (-19 would save ~16% but takes half an hour.)
tar -C "$WORK/bundle" -cf - . | zstd -q -T0 -12 --long=27 -o "$WORK/o.tar.zst"
rm -rf "$OUT/parts" "$OUT/boot"; mkdir -p "$OUT/parts" "$OUT/boot"
split -b "$PART" -d "$WORK/o.tar.zst" "$OUT/parts/o."
# the last part travels with boot/: if the two together exceed a part, halve the last part into two
last=$(ls "$OUT"/parts/o.* | tail -1)
if [ $(( $(stat -c %s "$last") + $(stat -c %s "$ZWHL") + 65536 )) -gt "$PART" ]; then
  n=$(ls "$OUT"/parts | wc -l)
  split -n 2 -a 2 --numeric-suffixes="$((n - 1))" "$last" "$OUT/parts/o.new."
  rm "$last"; for f in "$OUT"/parts/o.new.*; do mv "$f" "$OUT/parts/o.${f##*.}"; done
fi
(cd "$OUT/parts" && sha256sum o.*) > "$OUT/boot/SHA256SUMS"
ls "$OUT/parts" | wc -l | tr -d ' ' > "$OUT/boot/NPARTS"
cp "$ZWHL" "$OUT/boot/"
cat > "$OUT/boot/env.sh" <<'EOF'
# source me on the GPU host after receive.sh said READY-0.5.14 (the 0.5.17 bundle stays underneath)
export PYTHONPATH=/tmp/lfm-514:/tmp/lfm-site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
EOF
cat > "$OUT/boot/receive.sh" <<'EOF'
#!/usr/bin/env bash
# Runs on the GPU host (with the last part): gathers the copied parts in /tmp/lfm-514-parts; once every part is
# there and matches SHA256SUMS, installs the overlay into /tmp/lfm-514 (on top of the 0.5.17 bundle in /tmp/lfm-site).
# LFM514_SITE, LFM514_PARTS, LFM514_TMP and LFM_SITE move those folders (for a dry run away from the real ones).
set -euo pipefail
BOOT=$(cd "$(dirname "$0")" && pwd); CARRY=$(dirname "$BOOT")
SITE=${LFM514_SITE:-/tmp/lfm-514}; PARTS=${LFM514_PARTS:-/tmp/lfm-514-parts}
TMPD=${LFM514_TMP:-/tmp/lfm-514-tmp}; BASE=${LFM_SITE:-/tmp/lfm-site}
if [ -f "$SITE/.ready" ]; then echo "READY-0.5.14 (already installed in $SITE)"; exit 0; fi
mkdir -p "$PARTS"; cp "$CARRY"/parts/o.* "$PARTS"/ 2>/dev/null || true
need=$(cat "$BOOT/NPARTS"); missing=""; bad=""
while read -r sum name; do
  if [ ! -f "$PARTS/$name" ]; then missing="$missing $name"
  elif [ "$(sha256sum "$PARTS/$name" | cut -d' ' -f1)" != "$sum" ]; then bad="$bad $name"; fi
done < "$BOOT/SHA256SUMS"
[ -z "$bad" ] || { echo "checksum mismatch:$bad (parts of another staging?) rm them from $PARTS and copy again"; exit 1; }
[ -z "$missing" ] || { echo "have $(( need - $(echo $missing | wc -w) )) of $need parts; missing:$missing"; exit 0; }
[ -f "$BASE/.ready" ] || echo "warning: the 0.5.17 bundle is not READY in $BASE (run .gpu/carry/boot/receive.sh first)"
rm -rf "$TMPD"; mkdir -p "$TMPD/bundle"
python3 -m pip install -q --no-index --no-deps --target "$TMPD/zstd" "$BOOT"/zstandard-*.whl
cat "$PARTS"/o.* | PYTHONPATH=$TMPD/zstd python3 -c "
import sys, tarfile, zstandard
with zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(sys.stdin.buffer) as r:
    tarfile.open(fileobj=r, mode='r|').extractall(sys.argv[1])" "$TMPD/bundle"
rm -rf "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$TMPD"/bundle/whl/*.whl
cp -r "$TMPD"/bundle/kern/* "$SITE"/
rm -rf "$TMPD"
PYTHONPATH=$SITE:$BASE python3 - "$SITE" <<'PY'
import importlib, importlib.metadata as md, importlib.util, pathlib, sys
site = pathlib.Path(sys.argv[1]).resolve()
want = {"sglang": ("sglang", "0.5.14"), "sgl_kernel": ("sglang-kernel", "0.4.4"),
        "transformers": ("transformers", "5.8.1"), "flashinfer": ("flashinfer-python", "0.6.12"),
        "tvm_ffi": ("apache-tvm-ffi", "0.1.9")}
try:
    import torch
    cuda = torch.cuda.is_available()
except Exception:
    cuda = False
errs, notes, said = [], [], []
for mod, (dist, ver) in want.items():
    got = md.version(dist)
    origin = pathlib.Path(importlib.util.find_spec(mod).origin).resolve()
    if got != ver or site not in origin.parents:
        errs.append(f"{mod}: {dist} {got} from {origin}, want {ver} from {site}")
    try:
        m = importlib.import_module(mod)
        if mod == "sgl_kernel" and not callable(getattr(m, "fp8_blockwise_scaled_mm", None)):
            errs.append("sgl_kernel has no fp8_blockwise_scaled_mm")
        said.append(f"{mod} {got}")
    except Exception as e:
        (notes if not cuda else errs).append(f"import {mod}: {type(e).__name__}: {e}"[:300])
        said.append(f"{mod} {got} (files only)")
if not cuda:  # no GPU here (a dry run): the name must at least be defined and exported in the sources
    k = site / "sgl_kernel"
    if "def fp8_blockwise_scaled_mm" not in (k / "gemm.py").read_text() or \
       "fp8_blockwise_scaled_mm" not in (k / "__init__.py").read_text():
        errs.append("fp8_blockwise_scaled_mm not defined in sgl_kernel sources")
    said.append("(no CUDA here: fp8_blockwise_scaled_mm checked in the sources only)")
else:
    said.append(f"gpu {torch.cuda.get_device_name()}")
for n in notes:
    print("note:", n)
if errs:
    sys.exit("NOT READY-0.5.14:\n  " + "\n  ".join(errs))
print("READY-0.5.14", ", ".join(said))
PY
touch "$SITE/.ready"
EOF
chmod +x "$OUT/boot/receive.sh"
n=$(cat "$OUT/boot/NPARTS")
echo "ready: $n parts in $OUT/parts ($(du -sh "$OUT/parts" | cut -f1)); boot $(du -sh "$OUT/boot" | cut -f1)"
ls -l "$OUT/parts" | tail -n +2
echo "copy one part at a time to the host; the last one (o.$(printf %02d $((n - 1)))) together with $OUT/boot"
