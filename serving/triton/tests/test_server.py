"""Tests the OneRec backend inside a running tritonserver (started by scripts/ci.d/60-triton.sh).

    python serving/triton/tests/test_server.py --http 127.0.0.1:P --grpc 127.0.0.1:Q \
        --cli target/release/onerec --fixture tests/fixtures/moe_dec_l2

Every answer, over HTTP and gRPC, is compared with the `onerec` CLI's `--json` answer to the
same request (`--backend cpu`); bad requests must each fail alone while the server keeps
serving; a dynamic batch holding one bad request answers the others.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

DEFAULT = "onerec_default"
FIXTURE = "moe_dec_l2"
WGPU = "moe_dec_l2_wgpu"  # the fixture on the wgpu backend (lavapipe in CI), f32 KV cache


def inputs(mod, history, beam=None, results=None, exclude=None, exclude_history=None,
           history_dtype="INT64"):
    """Triton inputs for one user (batch dimension 1)."""
    def tensor(name, array, dtype):
        t = mod.InferInput(name, list(array.shape), dtype)
        t.set_data_from_numpy(array)
        return t

    ids = np.array([history], dtype=np.uint64).reshape(1, -1)
    if history_dtype == "INT64":
        h = tensor("HISTORY", ids.view(np.int64), "INT64")
    else:
        h = tensor("HISTORY", ids.astype(np.float32), "FP32")
    out = [h]
    if beam is not None:
        out.append(tensor("BEAM", np.array([[beam]], dtype=np.int32), "INT32"))
    if results is not None:
        out.append(tensor("RESULTS", np.array([[results]], dtype=np.int32), "INT32"))
    if exclude is not None:
        ex = np.array([exclude], dtype=np.uint64).reshape(1, -1).view(np.int64)
        out.append(tensor("EXCLUDE", ex, "INT64"))
    if exclude_history is not None:
        out.append(tensor("EXCLUDE_HISTORY", np.array([[exclude_history]], dtype=bool), "BOOL"))
    return out


def sessions(result):
    """The response as the CLI's JSON shape: [{score, items, sids}], best first."""
    items = result.as_numpy("ITEM_IDS")[0].view(np.uint64)
    scores = result.as_numpy("SCORES")[0]
    sids = result.as_numpy("SIDS")[0]
    return [{"score": float(s), "items": [int(i) for i in it], "sids": sid.tolist()}
            for s, it, sid in zip(scores, items, sids)]


class Checker:
    def __init__(self, a):
        self.cli = a.cli
        self.models = {DEFAULT: None, FIXTURE: a.fixture, WGPU: a.fixture}
        self.clients = {"http": (http, http.InferenceServerClient(a.http)),
                        "grpc": (grpc, grpc.InferenceServerClient(a.grpc))}
        self.checked = 0

    def expected(self, model, req):
        cmd = [self.cli, "recommend", "--json", "--backend", "cpu",
               "--history", ",".join(map(str, req["history"])),
               "--beam", str(req["beam"]), "--results", str(req["results"])]
        if self.models[model]:
            cmd += ["--model", self.models[model]]
        if req.get("exclude"):
            cmd += ["--exclude", ",".join(map(str, req["exclude"]))]
        if req.get("exclude_history"):
            cmd.append("--exclude-history")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out)["sessions"]

    def infer(self, proto, model, req):
        mod, client = self.clients[proto]
        return client.infer(model, inputs(mod, req["history"], req["beam"], req["results"],
                                          req.get("exclude"), req.get("exclude_history")))

    def same(self, got, want, tol, what):
        assert len(got) == len(want), f"{what}: {len(got)} sessions, CLI gives {len(want)}"
        for k, (g, w) in enumerate(zip(got, want)):
            assert g["items"] == w["items"], f"{what} session {k}: {g['items']} != {w['items']}"
            assert g["sids"] == w["sids"], f"{what} session {k}: SIDs differ"
            assert abs(g["score"] - w["score"]) <= tol, \
                f"{what} session {k}: score {g['score']} vs CLI {w['score']}"
        self.checked += 1

    def good(self, model, req, protos=("http", "grpc"), tol=1e-5):
        want = self.expected(model, req)
        for proto in protos:
            # Requests sent one at a time decode alone, as the CLI does: the same numbers.
            short = {k: v for k, v in req.items() if k in ("beam", "results", "exclude_history")}
            self.same(sessions(self.infer(proto, model, req)), want, tol, f"{model}/{proto} {short}")
        return want

    def bad(self, proto, model, make_inputs, needle, what):
        mod, client = self.clients[proto]
        try:
            client.infer(model, make_inputs(mod))
        except InferenceServerException as e:
            msg = str(e)
            assert needle.lower() in msg.lower(), f"{what} ({proto}): error {msg!r} lacks {needle!r}"
            print(f"  bad request refused ({proto}): {what}: {msg.splitlines()[0][:120]}")
        else:
            raise AssertionError(f"{what} ({proto}): the server accepted it")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True)
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--wgpu", action="store_true", help=f"the repository holds {WGPU}")
    a = ap.parse_args()
    c = Checker(a)
    for proto, (_, client) in c.clients.items():
        assert client.is_server_ready(), proto
        for m in (DEFAULT, FIXTURE) + ((WGPU,) if a.wgpu else ()):
            assert client.is_model_ready(m), f"{m} not ready over {proto}"

    print("-- answers equal the CLI's (HTTP and gRPC)")
    default_reqs = [
        {"history": [50, 172, 181], "beam": 32, "results": 3, "exclude_history": True},
        {"history": [1, 71, 95, 588], "beam": 16, "results": 5, "exclude_history": True},
        {"history": [100, 200, 300], "beam": 8, "results": 8, "exclude": [50, 181, 999999]},
    ]
    for r in default_reqs:
        c.good(DEFAULT, r)
    golden = json.loads((Path(a.fixture) / "golden.json").read_text())["requests"]
    for r in golden:
        c.good(FIXTURE, r)
    # The model's defaults (config.pbtxt: beam 32, results 10) when BEAM/RESULTS are absent.
    want = c.expected(DEFAULT, {"history": [50, 172, 181], "beam": 32, "results": 10})
    c.same(sessions(c.clients["http"][1].infer(DEFAULT, inputs(http, [50, 172, 181]))),
           want, 1e-5, "config defaults")

    if a.wgpu:
        print("-- the wgpu backend inside Triton (CLI on the CPU; the contract's f32 tolerance)")
        for r in golden[:8]:
            c.good(WGPU, r, tol=1e-3)

    print("-- bad requests fail alone; the server keeps serving")
    fixture_ids = golden[0]["history"]
    cases = [
        (lambda m: inputs(m, [50, 987654321]), "987654321", "unknown history id"),
        (lambda m: inputs(m, []), "empty", "empty history"),
        (lambda m: inputs(m, [50], beam=0), "beam", "beam 0"),
        (lambda m: inputs(m, [50], beam=100000), "beam", "beam too large"),
        (lambda m: inputs(m, [50], beam=300), "max_beam", "beam above the model's max_beam"),
        (lambda m: inputs(m, [50], beam=4, results=5), "results", "results > beam"),
        (lambda m: inputs(m, [50], history_dtype="FP32"), "HISTORY", "wrong dtype"),
        (lambda m: [_with(m.InferInput("HISTORY", [2, 1], "INT64"), np.array([[50], [172]], np.int64))],
         "one user per request", "two users in one request"),
        (lambda m: [_with(m.InferInput("HISTORY", [1, 1, 2], "INT64"),
                          np.array([[[50, 172]]], np.int64))], "HISTORY", "3-d history"),
        (lambda m: [_with(m.InferInput("BEAM", [1, 1], "INT32"), np.array([[4]], np.int32))],
         "HISTORY", "history missing"),
    ]
    for proto in ("http", "grpc"):
        for make, needle, what in cases:
            c.bad(proto, DEFAULT, make, needle, what)
            c.good(DEFAULT, default_reqs[0], protos=(proto,))
    c.bad("grpc", FIXTURE, lambda m: inputs(m, [50]), "50", "default-model id on the fixture")

    print("-- one dynamic batch: bad requests answered alone, the others decoded")
    batch = [dict(r) for r in golden[:6]]
    bad_at = {2, 4}
    # The same inputs in every request: the batcher keeps requests with other input sets apart.
    same = {"exclude": [], "exclude_history": False}
    batch[2] = {"history": [123], "beam": 4, "results": 2, **same}          # unknown id
    batch[4] = {"history": fixture_ids, "beam": 0, "results": 1, **same}    # beam 0
    expected = {i: c.expected(FIXTURE, r) for i, r in enumerate(batch) if i not in bad_at}
    stats_before = executions(c.clients["http"][1])
    # All sent at once (asynchronously) so the dynamic batcher gathers them.
    client = http.InferenceServerClient(a.http, concurrency=len(batch))
    pending = [client.async_infer(FIXTURE, inputs(http, r["history"], r["beam"], r["results"],
                                                  r.get("exclude"), r.get("exclude_history")))
               for r in batch]
    for i, p in enumerate(pending):
        if i in bad_at:
            try:
                p.get_result()
                raise AssertionError(f"batch request {i} should fail")
            except InferenceServerException as e:
                print(f"  batch request {i} refused: {str(e)[:100]}")
        else:
            # Decoded beside others: equal up to float rounding (docs/DECISIONS.md).
            c.same(sessions(p.get_result()), expected[i], 1e-3, f"batch request {i}")
    grown = {b: n - stats_before.get(b, 0) for b, n in executions(c.clients["http"][1]).items()}
    grown = {b: n for b, n in grown.items() if n > 0}
    print(f"  executions by batch size since: {grown}")
    assert any(b > 1 for b in grown), f"no execute call held more than one request: {grown}"
    c.good(FIXTURE, golden[0])
    print(f"triton: ok ({c.checked} answers compared with the CLI)")
    return 0


def _with(t, array):
    t.set_data_from_numpy(array)
    return t


def executions(client):
    """The statistics extension's executions per batch size of the fixture model."""
    stats = client.get_inference_statistics(FIXTURE)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"])
            for b in stats.get("batch_stats", [])}


if __name__ == "__main__":
    sys.exit(main())
