"""Lays out a Triton model repository and backend folder for the OneRec backend.

    python3 serving/triton/tests/repo.py OUT LIB NAME=MODEL_PATH [NAME=MODEL_PATH ...]
        [--max-batch 16] [--delay-us 2000] [--instances 1] [--beam 32] [--results 10]

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
  {{ name: "EXCLUDE_HISTORY" data_type: TYPE_BOOL dims: [ 1 ] optional: true }}
]
output [
  {{ name: "ITEM_IDS" data_type: TYPE_INT64 dims: [ -1, -1 ] }},
  {{ name: "SCORES" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "SIDS" data_type: TYPE_INT32 dims: [ -1, -1, -1 ] }}
]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters [
  {{ key: "model_file" value: {{ string_value: "{model_file}" }} }},
  {{ key: "backend" value: {{ string_value: "cpu" }} }},
  {{ key: "beam" value: {{ string_value: "{beam}" }} }},
  {{ key: "results" value: {{ string_value: "{results}" }} }},
  {{ key: "max_beam" value: {{ string_value: "256" }} }}
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
        name, path = spec.split("=", 1)
        src = Path(path)
        version = models / name / "1"
        if version.exists():
            shutil.rmtree(version)
        version.mkdir(parents=True)
        if src.is_dir():
            model_file = "model"
            shutil.copytree(src, version / model_file)
        else:
            model_file = "model.onerec"
            shutil.copy(src, version / model_file)
        (models / name / "config.pbtxt").write_text(CONFIG.format(
            name=name, max_batch=a.max_batch, delay_us=a.delay_us, instances=a.instances,
            beam=a.beam, results=min(a.results, a.beam), model_file=model_file))


if __name__ == "__main__":
    main()
