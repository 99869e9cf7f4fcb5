"""Tests the OneRec backend inside a running tritonserver (started by scripts/ci.d/60-triton.sh).

    python serving/triton/tests/test_server.py --http 127.0.0.1:P --grpc 127.0.0.1:Q \
        --cli target/release/onerec --fixture tests/fixtures/moe_dec_l2 \
        --reward-fixture tests/fixtures/reward_l3

Every answer, over HTTP and gRPC, is compared with the `onerec` CLI's `--json` answer to the
same request (`--backend cpu`), rewards, signals and the item-list answer included; bad
requests must each fail alone while the server keeps serving; a dynamic batch holding one
bad request answers the others.
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
REWARD = "reward_l3"  # a fixture with a reward model
# The same fixture whose config.pbtxt makes reranking and an item list of 6 the defaults.
REWARD_DEFAULTS = "reward_l3_rerank"
REWARD_DEFAULT_ITEMS = 6


def inputs(mod, history, beam=None, results=None, exclude=None, exclude_history=None,
           history_dtype="INT64", rerank=None, keep_permutations=None, items=None):
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
    if rerank is not None:
        out.append(tensor("RERANK", np.array([[rerank]], dtype=bool), "BOOL"))
    if keep_permutations is not None:
        out.append(tensor("KEEP_PERMUTATIONS", np.array([[keep_permutations]], dtype=bool), "BOOL"))
    if items is not None:
        out.append(tensor("ITEMS", np.array([[items]], dtype=np.int32), "INT32"))
    return out


def sessions(result):
    """The response's sessions as the CLI's JSON shape: [{score, items, sids[, reward,
    signals]}], best first."""
    items = result.as_numpy("ITEM_IDS")[0].view(np.uint64)
    scores = result.as_numpy("SCORES")[0]
    sids = result.as_numpy("SIDS")[0]
    out = [{"score": float(s), "items": [int(i) for i in it], "sids": sid.tolist()}
           for s, it, sid in zip(scores, items, sids)]
    rewards, signals = result.as_numpy("REWARDS"), result.as_numpy("SIGNALS")
    if rewards is not None:
        # One reward per session when the request reranked, none otherwise.
        rewards, signals = rewards[0], signals[0]
        assert len(rewards) in (0, len(out)) and len(signals) == len(rewards), \
            f"{len(rewards)} rewards, {len(signals)} signal rows for {len(out)} sessions"
        for x, r, sig in zip(out, rewards, signals):
            x["reward"], x["signals"] = float(r), [float(v) for v in sig]
    return out


def item_list(result):
    """The item-list answer as the CLI's JSON shape: [{item, score}], best first."""
    ids = result.as_numpy("ITEM_LIST")[0].view(np.uint64)
    scores = result.as_numpy("ITEM_SCORES")[0]
    assert len(ids) == len(scores)
    return [{"item": int(i), "score": float(s)} for i, s in zip(ids, scores)]


class Checker:
    def __init__(self, a):
        self.cli = a.cli
        self.models = {DEFAULT: None, FIXTURE: a.fixture, WGPU: a.fixture,
                       REWARD: a.reward_fixture, REWARD_DEFAULTS: a.reward_fixture}
        self.clients = {"http": (http, http.InferenceServerClient(a.http)),
                        "grpc": (grpc, grpc.InferenceServerClient(a.grpc))}
        self.checked = 0

    def expected(self, model, req):
        """The CLI's sessions for `req`."""
        return self.cli_answer(model, req)["sessions"]

    def cli_answer(self, model, req):
        """The CLI's whole JSON answer for `req`: sessions and (when asked) items."""
        cmd = [self.cli, "recommend", "--json", "--backend", "cpu",
               "--history", ",".join(map(str, req["history"])),
               "--beam", str(req["beam"]), "--results", str(req["results"])]
        if self.models[model]:
            cmd += ["--model", self.models[model]]
        if req.get("exclude"):
            cmd += ["--exclude", ",".join(map(str, req["exclude"]))]
        if req.get("exclude_history"):
            cmd.append("--exclude-history")
        if req.get("rerank"):
            cmd.append("--rerank")
        if req.get("keep_permutations"):
            cmd.append("--keep-permutations")
        if req.get("items"):
            cmd += ["--items", str(req["items"])]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def infer(self, proto, model, req):
        mod, client = self.clients[proto]
        return client.infer(model, inputs(mod, req["history"], req["beam"], req["results"],
                                          req.get("exclude"), req.get("exclude_history"),
                                          rerank=req.get("rerank"),
                                          keep_permutations=req.get("keep_permutations"),
                                          items=req.get("items")))

    def same(self, got, want, tol, what):
        assert len(got) == len(want), f"{what}: {len(got)} sessions, CLI gives {len(want)}"
        for k, (g, w) in enumerate(zip(got, want)):
            assert g["items"] == w["items"], f"{what} session {k}: {g['items']} != {w['items']}"
            assert g["sids"] == w["sids"], f"{what} session {k}: SIDs differ"
            assert abs(g["score"] - w["score"]) <= tol, \
                f"{what} session {k}: score {g['score']} vs CLI {w['score']}"
            assert ("reward" in g) == ("reward" in w), \
                f"{what} session {k}: reward {g.get('reward')} vs CLI {w.get('reward')}"
            if "reward" in w:
                assert abs(g["reward"] - w["reward"]) <= tol, \
                    f"{what} session {k}: reward {g['reward']} vs CLI {w['reward']}"
                assert len(g["signals"]) == len(w["signals"]) and all(
                    abs(a - b) <= tol for a, b in zip(g["signals"], w["signals"])), \
                    f"{what} session {k}: signals {g['signals']} vs CLI {w['signals']}"
        self.checked += 1

    def same_items(self, got, want, tol, what):
        assert [x["item"] for x in got] == [x["item"] for x in want], \
            f"{what}: item list {got} != CLI {want}"
        for g, w in zip(got, want):
            assert abs(g["score"] - w["score"]) <= tol, f"{what}: item {g} vs CLI {w}"
        self.checked += 1

    def good(self, model, req, protos=("http", "grpc"), tol=1e-5):
        answer = self.cli_answer(model, req)
        want = answer["sessions"]
        want_items = [{"item": x["item"], "score": x["score"]} for x in answer.get("items", [])]
        for proto in protos:
            # Requests sent one at a time decode alone, as the CLI does: the same numbers.
            short = {k: v for k, v in req.items()
                     if k in ("beam", "results", "exclude_history", "rerank", "keep_permutations",
                              "items")}
            result = self.infer(proto, model, req)
            self.same(sessions(result), want, tol, f"{model}/{proto} {short}")
            self.same_items(item_list(result), want_items, tol, f"{model}/{proto} {short}")
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
    ap.add_argument("--reward-fixture", required=True,
                    help=f"the fixture with a reward model, served as {REWARD} and {REWARD_DEFAULTS}")
    ap.add_argument("--wgpu", action="store_true", help=f"the repository holds {WGPU}")
    a = ap.parse_args()
    c = Checker(a)
    for proto, (_, client) in c.clients.items():
        assert client.is_server_ready(), proto
        for m in (DEFAULT, FIXTURE, REWARD, REWARD_DEFAULTS) + ((WGPU,) if a.wgpu else ()):
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

    print("-- rewards, signals and the item list equal the CLI's (HTTP and gRPC)")
    reward_golden = json.loads((Path(a.reward_fixture) / "golden.json").read_text())["requests"]
    for r in reward_golden:
        for rerank in (False, True):
            for keep in (False, True):
                c.good(REWARD, {**base(r), "rerank": rerank, "keep_permutations": keep,
                                "items": r["items"]})
    # config.pbtxt makes reranking and an item list the defaults; a request may turn them off.
    h = reward_golden[1]["history"]
    defaults = {"history": h, "beam": 32, "results": 10, "rerank": True,
                "items": REWARD_DEFAULT_ITEMS}
    answer = c.cli_answer(REWARD_DEFAULTS, defaults)
    for proto, (mod, client) in c.clients.items():
        result = client.infer(REWARD_DEFAULTS, inputs(mod, h))
        c.same(sessions(result), answer["sessions"], 1e-5, f"rerank defaults ({proto})")
        c.same_items(item_list(result), [{"item": x["item"], "score": x["score"]}
                                         for x in answer["items"]], 1e-5, f"item defaults ({proto})")
    c.good(REWARD_DEFAULTS, {**defaults, "rerank": False, "items": 0})

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
        (lambda m: inputs(m, [50], beam=4, items=5), "ITEMS", "items > beam"),
        (lambda m: inputs(m, [50], items=-1), "ITEMS", "negative items"),
        (lambda m: inputs(m, [50]) + [_with(m.InferInput("RERANK", [1, 1], "INT32"),
                                            np.array([[1]], np.int32))], "RERANK", "INT32 rerank"),
        (lambda m: inputs(m, [50]) + [_with(m.InferInput("KEEP_PERMUTATIONS", [1, 2], "BOOL"),
                                            np.array([[True, False]]))],
         "KEEP_PERMUTATIONS", "two keep_permutations flags"),
        (lambda m: inputs(m, [50]) + [_with(m.InferInput("ITEMS", [1, 1], "FP32"),
                                            np.array([[4]], np.float32))], "ITEMS", "FP32 items"),
    ]
    for proto in ("http", "grpc"):
        for make, needle, what in cases:
            c.bad(proto, DEFAULT, make, needle, what)
            c.good(DEFAULT, default_reqs[0], protos=(proto,))
    c.bad("grpc", FIXTURE, lambda m: inputs(m, [50]), "50", "default-model id on the fixture")
    for proto in ("http", "grpc"):
        # The fixture has no reward model: this request fails, the next one is answered.
        c.bad(proto, FIXTURE, lambda m: inputs(m, fixture_ids, rerank=True), "reward model",
              "rerank without a reward model")
        c.good(FIXTURE, golden[0], protos=(proto,))

    print("-- one dynamic batch: bad requests answered alone, the others decoded")
    batch = [dict(r) for r in golden[:6]]
    # The same inputs in every request: the batcher keeps requests with other input sets apart.
    same = {"exclude": [], "exclude_history": False, "rerank": False}
    for r in batch:
        r["rerank"] = False
    batch[2] = {"history": [123], "beam": 4, "results": 2, **same}          # unknown id
    batch[3] = {**batch[3], "rerank": True}                                 # no reward model
    batch[4] = {"history": fixture_ids, "beam": 0, "results": 1, **same}    # beam 0
    grown = one_batch(c, a.http, FIXTURE, batch, bad_at={2, 3, 4})
    assert any(b > 1 for b in grown), f"no execute call held more than one request: {grown}"
    c.good(FIXTURE, golden[0])

    print("-- one dynamic batch on the reward model: reranked, plain and item-list requests")
    batch = [{**base(r), "rerank": k % 2 == 0, "keep_permutations": k % 3 == 0, "items": r["items"]}
             for k, r in enumerate(reward_golden)]
    batch.append({**base(reward_golden[0]), "rerank": True, "keep_permutations": False,
                  "items": reward_golden[0]["beam"] + 1})                   # items > beam
    grown = one_batch(c, a.http, REWARD, batch, bad_at={len(batch) - 1})
    assert sum(b * n for b, n in grown.items()) >= len(batch) - 1, grown
    c.good(REWARD, batch[0])
    print(f"triton: ok ({c.checked} answers compared with the CLI)")
    return 0


def base(r):
    """A golden request's search fields."""
    return {k: r[k] for k in ("history", "beam", "results", "exclude", "exclude_history")}


def one_batch(c, url, model, batch, bad_at):
    """Sends `batch` at once so the dynamic batcher gathers it; the requests in `bad_at` must
    fail, the others equal the CLI's answers. Returns the executions per batch size since."""
    want = {i: c.cli_answer(model, r) for i, r in enumerate(batch) if i not in bad_at}
    stats_before = executions(c.clients["http"][1], model)
    client = http.InferenceServerClient(url, concurrency=len(batch))
    pending = [client.async_infer(model, inputs(http, r["history"], r["beam"], r["results"],
                                                r.get("exclude"), r.get("exclude_history"),
                                                rerank=r.get("rerank"),
                                                keep_permutations=r.get("keep_permutations"),
                                                items=r.get("items")))
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
            result = p.get_result()
            c.same(sessions(result), want[i]["sessions"], 1e-3, f"{model} batch request {i}")
            items = [{"item": x["item"], "score": x["score"]} for x in want[i].get("items", [])]
            c.same_items(item_list(result), items, 1e-3, f"{model} batch request {i}")
    grown = {b: n - stats_before.get(b, 0)
             for b, n in executions(c.clients["http"][1], model).items()}
    grown = {b: n for b, n in grown.items() if n > 0}
    print(f"  {model}: executions by batch size since: {grown}")
    return grown


def _with(t, array):
    t.set_data_from_numpy(array)
    return t


def executions(client, model):
    """The statistics extension's executions per batch size of `model`."""
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"])
            for b in stats.get("batch_stats", [])}


if __name__ == "__main__":
    sys.exit(main())
