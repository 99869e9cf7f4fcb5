"""Lays out a Triton model repository and backend folder for the OneRec backend.

    python3 serving/triton/tests/repo.py OUT LIB NAME=MODEL_PATH[,key=value...] [...]
        [--max-batch 16] [--delay-us 2000] [--instances 1] [--beam 32] [--results 10]

Per model, `instances=N` overrides --instances and any other key=value becomes a backend
parameter (`backend=wgpu`, `kv_precision=f32`, `rerank=true`, `items=10`, ...).

OUT/backends/onerec/libtriton_onerec.so is LIB (copied); OUT/models/NAME/config.pbtxt and
OUT/models/NAME/1/model.onerec (a model file, copied) or OUT/models/NAME/1/model/ (a
checkpoint directory, copied). The config is the contract of docs/SERVING.md.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

CONFIG = """\
name: "{name}"
backend: "onerec"
max_batch_size: {max_batch}
dynamic_batching {{
  max_queue_delay_microseconds: {delay_us}
}}
input [
  {{ name: "HISTORY" data_type: TYPE_INT64 dims: [ -1 ] allow_ragged_batch: true }},
  {{ name: "EXCLUDE" data_type: TYPE_INT64 dims: [ -1 ] allow_ragged_batch: true optional: true }},
  {{ name: "BEAM" data_type: TYPE_INT32 dims: [ 1 ] optional: true }},
  {{ name: "RESULTS" data_type: TYPE_INT32 dims: [ 1 ] optional: true }},
  {{ name: "EXCLUDE_HISTORY" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "RERANK" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "KEEP_PERMUTATIONS" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "ITEMS" data_type: TYPE_INT32 dims: [ 1 ] optional: true }}
]
output [
  {{ name: "ITEM_IDS" data_type: TYPE_INT64 dims: [ -1, -1 ] }},
  {{ name: "SCORES" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "SIDS" data_type: TYPE_INT32 dims: [ -1, -1, -1 ] }},
  {{ name: "REWARDS" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "SIGNALS" data_type: TYPE_FP32 dims: [ -1, -1 ] }},
  {{ name: "ITEM_LIST" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "ITEM_SCORES" data_type: TYPE_FP32 dims: [ -1 ] }}
]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters [
{parameters}
]
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("lib")
    ap.add_argument("models", nargs="+", help="NAME=PATH (model file or checkpoint dir)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--delay-us", type=int, default=2000)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--beam", type=int, default=32)
    ap.add_argument("--results", type=int, default=10)
    a = ap.parse_args()
    out = Path(a.out)
    backend = out / "backends" / "onerec"
    backend.mkdir(parents=True, exist_ok=True)
    shutil.copy(a.lib, backend / "libtriton_onerec.so")
    models = out / "models"
    for spec in a.models:
        name, rest = spec.split("=", 1)
        path, *options = rest.split(",")
        params = {"backend": "cpu", "beam": str(a.beam), "results": str(min(a.results, a.beam)),
                  "max_beam": "256"}
        params.update(o.split("=", 1) for o in options)
        instances = params.pop("instances", str(a.instances))
        src = Path(path)
        version = models / name / "1"
        if version.exists():
            shutil.rmtree(version)
        version.mkdir(parents=True)
        if src.is_dir():
            params["model_file"] = "model"
            shutil.copytree(src, version / "model")
        else:
            params["model_file"] = "model.onerec"
            shutil.copy(src, version / "model.onerec")
        parameters = ",\n".join(f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
                                for k, v in params.items())
        (models / name / "config.pbtxt").write_text(CONFIG.format(
            name=name, max_batch=a.max_batch, delay_us=a.delay_us, instances=instances,
            parameters=parameters))


if __name__ == "__main__":
    main()
