"""The Python package against the `onerec` CLI on the golden fixtures, and its errors.

The CLI binary is $ONEREC_BIN, else target/release/onerec of the repository."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

import onerec

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ["dense_l3", "moe_dec_l2", "moe_enc_dec_l4", "pointwise_top1", "heads_odd"]
CLI = Path(os.environ.get("ONEREC_BIN", ROOT / "target" / "release" / "onerec"))


def golden(name: str) -> list[dict]:
    return json.loads((ROOT / "tests/fixtures" / name / "golden.json").read_text())["requests"]


def cli(name: str, req: dict) -> list[dict]:
    args = [str(CLI), "recommend", "--model", str(ROOT / "tests/fixtures" / name),
            "--backend", "cpu", "--json",
            "--history", ",".join(map(str, req["history"])),
            "--beam", str(req["beam"]), "--results", str(req["results"]),
            "--exclude", ",".join(map(str, req["exclude"]))]
    if req["exclude_history"]:
        args.append("--exclude-history")
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["sessions"]


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request):
    name = request.param
    return name, onerec.Engine(ROOT / "tests/fixtures" / name, backend="cpu")


def same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["items"] == w["items"]
        assert g["sids"] == w["sids"]
        assert abs(g["score"] - w["score"]) < 1e-5


@pytest.mark.skipif(not CLI.exists(), reason=f"no onerec CLI at {CLI} (cargo build --release)")
def test_equals_the_cli_one_by_one(fixture):
    name, engine = fixture
    for req in golden(name)[:4]:
        got = engine.recommend([req["history"]], beam=req["beam"], results=req["results"],
                               exclude=req["exclude"], exclude_history=req["exclude_history"])
        assert len(got) == 1
        same(got[0], cli(name, req))


def test_a_batch_equals_the_goldens(fixture):
    name, engine = fixture
    reqs = golden(name)
    # Requests with the same options, as one batch.
    beam, results, exh = reqs[0]["beam"], reqs[0]["results"], reqs[0]["exclude_history"]
    group = [r for r in reqs if (r["beam"], r["results"], r["exclude_history"]) == (beam, results, exh)]
    got = engine.recommend([r["history"] for r in group], beam=beam, results=results,
                           exclude=[r["exclude"] for r in group], exclude_history=exh,
                           keep_permutations=True)  # the goldens record the search's order
    assert len(got) == len(group)
    for g, r in zip(got, group):
        assert [s["items"] for s in g][:1] == [s["items"] for s in r["sessions"]][:1]
        for s, w in zip(g, r["sessions"]):
            assert abs(s["score"] - w["score"]) < 1e-3


def test_errors_name_what_is_wrong():
    engine = onerec.Engine(ROOT / "tests/fixtures/dense_l3", backend="cpu")
    known = golden("dense_l3")[0]["history"]
    with pytest.raises(onerec.UnknownItemError, match="12345"):
        engine.recommend([known, [12345]])
    with pytest.raises(ValueError, match="history is empty"):
        engine.recommend([[]])
    with pytest.raises(ValueError, match="beam"):
        engine.recommend([known], beam=0)
    with pytest.raises(ValueError, match="results"):
        engine.recommend([known], beam=2, results=3)
    with pytest.raises(ValueError, match="exclude has 1 lists for 2 histories"):
        engine.recommend([known, known], exclude=[[1]])
    with pytest.raises(ValueError, match="unknown backend"):
        onerec.Engine(ROOT / "tests/fixtures/dense_l3", backend="tpu")
    with pytest.raises(onerec.OneRecError, match="no_such_model"):
        onerec.Engine(ROOT / "no_such_model", backend="cpu")
    with pytest.raises(OverflowError):
        engine.recommend([[-1]])
    assert engine.recommend([]) == []


def test_the_built_in_model_and_catalog_queries():
    engine = onerec.Engine(backend="cpu")
    assert len(engine) == 1682 and 50 in engine and 0 not in engine
    assert sorted(engine.items) == list(range(1, 1683))
    assert len(engine.sid(50)) == engine.config["n_levels"]
    assert engine.backend.startswith("cpu")
    with pytest.raises(onerec.UnknownItemError):
        engine.sid(10**6)
    # Distinct item sets by default: beam 8 holds only 2 here, beam 32 more than 3.
    out = engine.recommend([[50, 172, 181]], beam=32, results=3, exclude_history=True)
    assert len(out[0]) == 3
    assert not {50, 172, 181} & {i for s in out[0] for i in s["items"]}
    assert out[0][0]["score"] >= out[0][1]["score"] >= out[0][2]["score"]


def test_threads_share_one_engine():
    engine = onerec.Engine(ROOT / "tests/fixtures/moe_dec_l2", backend="cpu")
    req = golden("moe_dec_l2")[1]
    want = engine.recommend([req["history"]], beam=req["beam"], results=req["results"])
    got = []

    def work():
        got.append(engine.recommend([req["history"]], beam=req["beam"], results=req["results"]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [want] * 4


def test_rerank_and_distinct_sessions_equal_the_reference():
    """The reward fixture (reference/make_reward_fixture.py): reranked and distinct answers."""
    fx = ROOT / "tests/fixtures/reward_l3"
    engine = onerec.Engine(fx, backend="cpu")
    for r in json.loads((fx / "golden.json").read_text())["requests"][:3]:
        beams = r["beams"]
        for rerank, keep in ((True, False), (False, False), (False, True)):
            got = engine.recommend([r["history"]], beam=r["beam"], results=r["results"],
                                   exclude=r["exclude"], exclude_history=r["exclude_history"],
                                   rerank=rerank, keep_permutations=keep)[0]
            want = r["answers"][f"rerank={int(rerank)},keep={int(keep)}"]
            assert [s["items"] for s in got] == [beams[i]["items"] for i in want]
            for s, i in zip(got, want):
                assert ("reward" in s) == rerank
                if rerank:
                    assert abs(s["reward"] - beams[i]["reward"]) <= 1e-4 * abs(beams[i]["reward"])
                    assert len(s["signals"]) == 3
    plain = onerec.Engine(ROOT / "tests/fixtures/dense_l3", backend="cpu")
    with pytest.raises(ValueError, match="no reward model"):
        plain.recommend([golden("dense_l3")[0]["history"]], rerank=True)
