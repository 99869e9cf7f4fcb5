#!/usr/bin/env bash
# Regenerates the seed corpus (fuzz/corpus/) from the test fixtures; the provenance of
# every committed seed. Needs target/release/onerec-quantize.
set -euo pipefail
cd "$(dirname "$0")/.."
q=target/release/onerec-quantize
fx=tests/fixtures
c=fuzz/corpus
rm -rf "$c" && mkdir -p "$c/model_file" "$c/checkpoint" "$c/request"
for spec in dense_l3:q8 heads_odd:f16 moe_dec_l2:q4 pointwise_top1:f32; do
    name="${spec%%:*}" dtype="${spec##*:}"
    "$q" --input "$fx/$name" --output "$c/model_file/$name.$dtype" --dtype "$dtype" --quiet > /dev/null
done
# checkpoint input: u32 LE length of config.json, config.json, model.safetensors.
for name in pointwise_top1 heads_odd; do
    python3 - "$fx/$name" "$c/checkpoint/$name" <<'PY'
import struct, sys, pathlib
d = pathlib.Path(sys.argv[1])
cfg = (d / "config.json").read_bytes()
st = (d / "model.safetensors").read_bytes()
pathlib.Path(sys.argv[2]).write_bytes(struct.pack("<I", len(cfg)) + cfg + st)
PY
done
# request inputs: bytes the target decodes into batches (see fuzz/src/targets.rs).
python3 - "$c/request" <<'PY'
import random, sys, pathlib
out = pathlib.Path(sys.argv[1])
rng = random.Random(11)
for i in range(8):
    n = [4, 8, 16, 32, 64, 96, 128, 200][i]
    (out / f"seed{i}").write_bytes(bytes(rng.randrange(256) for _ in range(n)))
PY
du -sh "$c"
