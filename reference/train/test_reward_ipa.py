"""Checks of the reward-model and IPA code (needs torch, not the data):

    python3 -m unittest reference/train/test_reward_ipa.py     # from the repository root
"""

from __future__ import annotations

import itertools
import math
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from onerec_ref import Catalog, OneRec, OneRecConfig, Request, beam_search, random_init  # noqa: E402
from onerec_ref.reward import RewardConfig, RewardModel  # noqa: E402
from train import generate, ipa, reward_data, reward_train  # noqa: E402
from train.data import Split  # noqa: E402

torch.set_num_threads(1)


def tiny():
    cfg = OneRecConfig(d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=2, d_ff=32,
                       n_experts=4, top_k=2, d_expert=16, moe_enc_layers=[], moe_dec_layers=[1],
                       n_levels=2, codebook_size=6, session_len=3, max_history=8, rms_eps=1e-6)
    model = OneRec(cfg)
    random_init(model, np.random.default_rng(0), embed_std=0.5)
    ids = np.arange(100, 130)
    sids = np.array([[r // 6, r % 6] for r in range(30)], dtype=np.int32)
    return model.eval(), Catalog(ids, sids, 6)


def tiny_split(cat):
    """6 users with 16 random distinct items each, sessions of 3."""
    rng = np.random.default_rng(0)
    seqs = {u: [int(x) for x in rng.choice(cat.item_ids, 16, replace=False)] for u in range(6)}
    return Split(3, list(range(6)), seqs)


def tiny_rm(model):
    rc = RewardConfig(d_model=8, n_heads=2, d_ff=16, max_history=6)
    cfg = model.cfg
    rm = RewardModel(rc, cfg.n_levels, cfg.codebook_size, cfg.session_len, cfg.rms_eps)
    reward_train._init(rm, 0)
    with torch.no_grad():
        for p in rm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return rm.eval()


class Metrics(unittest.TestCase):
    def test_auc_matches_pair_count(self):
        rng = np.random.default_rng(1)
        y = rng.random(200) < 0.3
        p = np.round(rng.random(200), 1)  # many ties
        pos, neg = p[y], p[~y]
        want = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg])
        self.assertAlmostEqual(reward_train.auc(y, p), want, places=10)
        self.assertTrue(math.isnan(reward_train.auc(np.zeros(3), np.ones(3))))

    def test_ece(self):
        p = np.array([0.05, 0.05, 0.95, 0.95])
        y = np.array([0.0, 0.0, 1.0, 0.0])
        # bins 0 and 9: |0.05 - 0| * 0.5 + |0.95 - 0.5| * 0.5
        self.assertAlmostEqual(reward_train.ece(y, p)["ece"], 0.025 + 0.225, places=10)


class Labels(unittest.TestCase):
    def test_watch_like_from_window(self):
        seqs = {1: list(range(10, 40))}
        ratings = {1: {i: (5.0 if i % 2 else 3.0) for i in range(10, 40)}}
        split = Split(3, [1], seqs)
        row_of = {i: i - 10 for i in range(10, 40)}
        pts = reward_data.make_points(split, ratings, row_of, "train", 5, 4, 4.0, 3)
        tp = split.train_part(1)
        self.assertEqual(len(pts.users), len(tp) - 4 - 3 + 1)  # whole window in training part
        for p, h in enumerate(pts.histories):
            self.assertEqual(h, tp[: len(h)])
            win = tp[len(h) : len(h) + 4]
            rows = np.array([[row_of[i] for i in (win[0], win[1], 39)]])
            lab = reward_data.item_labels(pts, np.array([p]), rows)[0]
            want = [[1.0, float(win[0] % 2)], [1.0, float(win[1] % 2)], [0.0, 0.0]]
            self.assertEqual(lab.tolist(), want)
        valid = reward_data.make_points(split, ratings, row_of, "valid", 5, 4)
        self.assertEqual(valid.histories[0], seqs[1][:24])
        self.assertEqual(valid.window[0].tolist(), [row_of[i] for i in seqs[1][24:28]])

    def test_synthetic_sessions_avoid_history(self):
        seqs = {u: list(range(10 + u, 40)) for u in range(1, 4)}
        ratings = {u: {i: 4.0 for i in s} for u, s in seqs.items()}
        split = Split(3, [1, 2, 3], seqs)
        row_of = {i: i for i in range(0, 60)}
        pts = reward_data.make_points(split, ratings, row_of, "train", 5, 4, 4.0, 3)
        pop = np.ones(60)
        sids = np.array([[r % 4, r // 4] for r in range(60)])
        s = reward_data.synthetic_sessions(pts, 3, pop, 1.0, np.random.default_rng(0), row_of,
                                           1, 0.5, 1, sids)
        self.assertEqual(set(s.kind.tolist()), {0, 1, 3})
        for p, rows, kd in zip(s.point, s.rows, s.kind):
            if kd == 3:  # negatives share the first code with a window item
                codes = {int(sids[r, 0]) for r in pts.window[p]}
                neg = [r for r in rows.tolist() if r not in pts.window[p]]
                self.assertTrue(all(sids[r, 0] in codes for r in neg))
            self.assertEqual(len(set(rows.tolist())), 3)
            self.assertFalse(set(rows.tolist()) & set(pts.histories[p]))


class Calibration(unittest.TestCase):
    def test_platt_scaling_is_folded_into_the_heads(self):
        seqs = {u: list(range(10 + u, 40)) for u in range(1, 4)}
        ratings = {u: {i: float(i % 5 + 1) for i in s} for u, s in seqs.items()}
        split = Split(2, [1, 2, 3], seqs)
        row_of = {i: i for i in range(60)}
        pts = reward_data.make_points(split, ratings, row_of, "train", 6, 4, 4.0, 3)
        sess = reward_data.synthetic_sessions(pts, 3, np.ones(60), 1.0,
                                              np.random.default_rng(0), row_of, 2, 0.5)
        model, _ = tiny()
        cfg = model.cfg
        rm = RewardModel(RewardConfig(d_model=8, n_heads=2, d_ff=16, max_history=6), 2, 16, 3,
                         1e-6)
        reward_train._init(rm, 0)
        sids = torch.tensor([[r % 16, r // 16] for r in range(60)])
        before = reward_train.predict(rm, pts, sess, sids)
        fit = reward_train.calibrate(rm, pts, sess, sids)
        after = reward_train.predict(rm, pts, sess, sids)
        for k, sig in enumerate(reward_data.SIGNALS):
            a, b = fit[sig]["scale"], fit[sig]["bias"]
            z = np.log(before[..., k]) - np.log1p(-before[..., k])
            np.testing.assert_allclose(after[..., k], 1 / (1 + np.exp(-(a * z + b))), atol=2e-4)
            # a fitted intercept makes the mean prediction the observed rate
            self.assertAlmostEqual(float(after[..., k].mean()), float(sess.labels[..., k].mean()),
                                   delta=2e-3)


class Pairs(unittest.TestCase):
    def test_session_pairs(self):
        rm = tiny_rm(tiny()[0])
        # one point, three model sessions with observed rewards 0, 0.5, 1 (watch = like)
        lab = np.array([[[0, 0]] * 3, [[1, 1], [0, 0], [1, 1]], [[1, 1]] * 3], dtype=np.float32)
        sess = reward_data.Sessions(np.zeros(3, int), np.zeros((3, 3), int), lab,
                                    np.full(3, 2), np.array([3.0, 2.0, 1.0]))
        p = np.broadcast_to(np.array([0.1, 0.3, 0.2])[:, None, None], (3, 3, 2))
        out = reward_train.session_pairs(rm, sess, np.asarray(p))
        self.assertEqual(out["pairs"], 3)
        self.assertAlmostEqual(out["accuracy"], 2 / 3, places=3)  # (0,1) and (0,2) right, (1,2) wrong
        self.assertAlmostEqual(out["beam_score_accuracy"], 0.0)
        # one point: every resample is that point, so the interval is the difference itself
        self.assertEqual(out["minus_beam_ci95"], [round(2 / 3, 4)] * 2)

    def test_session_pairs_interval_resamples_points(self):
        rm = tiny_rm(tiny()[0])
        rng = np.random.default_rng(3)
        n_pts, per = 40, 4
        lab = (rng.random((n_pts * per, 3, 2)) < 0.4).astype(np.float32)
        n = n_pts * per
        sess = reward_data.Sessions(np.repeat(np.arange(n_pts), per), np.zeros((n, 3), int), lab,
                                    np.full(n, 2), rng.random(n))
        # predictions = the observed reward on half of the points, reversed on the other half
        true = lab.mean(1) @ np.array([0.5, 0.5])
        sign = np.where(sess.point < n_pts // 2, 1.0, -1.0)
        p = np.broadcast_to((sign * true)[:, None, None], lab.shape)
        out = reward_train.session_pairs(rm, sess, np.asarray(p))
        diff = out["accuracy"] - out["beam_score_accuracy"]
        lo, hi = out["minus_beam_ci95"]
        self.assertLess(lo, diff)
        self.assertGreater(hi, diff)
        self.assertGreater(hi - lo, 0.1)  # half the points right, half wrong: a wide interval


class PairLoss(unittest.TestCase):
    def test_pair_groups_skip_points_without_pairs(self):
        # point 0: observed rewards 0, 1 (a pair); point 1: all equal (none); point 2: a
        # synthetic (kind 1) session next to one model session (no model pair)
        lab = np.zeros((5, 2, 2), np.float32)
        lab[1] = 1.0
        sess = reward_data.Sessions(np.array([0, 0, 1, 1, 2]), np.zeros((5, 2), int), lab,
                                    np.array([2, 2, 2, 2, 1]))
        lab[4] = 1.0
        groups = reward_train.pair_groups(sess, [0.5, 0.5])
        self.assertEqual([g.tolist() for g in groups], [[0, 1]])

    def test_calibration_split_by_users_holds_out_whole_users(self):
        pts = reward_data.Points(np.array([7, 7, 8, 8, 9, 9]), np.zeros((6, 2), int),
                                 np.zeros((6, 2), int), np.zeros((6, 2), bool), [[]] * 6)
        point = np.repeat(np.arange(6), 2)
        kind = np.tile([2, 1], 6)
        sess = reward_data.Sessions(point, np.zeros((12, 2), int), np.zeros((12, 2, 2)), kind)
        is_cal, drop = reward_train.calibration_split(pts, sess, 0.34, "users",
                                                      np.random.default_rng(0))
        held = set(pts.users[point[drop]].tolist())
        self.assertEqual(len(held), 1)
        # every session of the held-out user leaves training; only its model ones calibrate
        np.testing.assert_array_equal(drop, np.isin(pts.users[point], list(held)))
        np.testing.assert_array_equal(is_cal, drop & (kind == 2))
        is_cal, drop = reward_train.calibration_split(pts, sess, 0.34, "points",
                                                      np.random.default_rng(0))
        np.testing.assert_array_equal(is_cal, drop)
        self.assertEqual(int(is_cal.sum()), 2)
        self.assertTrue((kind[is_cal] == 2).all())

    def test_pair_loss_values_and_gradient(self):
        R = torch.tensor([0.2, 0.5, 0.1, 0.3, 0.3], requires_grad=True)
        true = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.0])
        # group 1 (sizes 2): pair (0 over 1); group 2 (sizes 3): (2 over 4), (3 over 4)
        loss = reward_train.pair_loss(R, true, [2, 3], 10.0)
        sp = lambda x: math.log1p(math.exp(-x))  # noqa: E731
        want = (sp(10 * (0.2 - 0.5)) + sp(10 * (0.1 - 0.3)) + sp(10 * (0.3 - 0.3))) / 3
        self.assertAlmostEqual(float(loss), want, places=5)
        loss.backward()
        # the better session of a wrongly ordered pair is pushed up, the worse one down
        self.assertLess(float(R.grad[0]), 0.0)
        self.assertGreater(float(R.grad[1]), 0.0)
        # no cross-group pairs: 2 is not compared with 0 or 1, and ties give nothing
        self.assertEqual(float(reward_train.pair_loss(R, torch.ones(5), [2, 3], 10.0)), 0.0)

    def test_pair_loss_training_orders_sessions(self):
        """A few steps of the pairwise loss alone raise the pair accuracy to 1 on a toy
        set where one item marks the better session."""
        model, _ = tiny()
        cfg = model.cfg
        rm = RewardModel(RewardConfig(d_model=8, n_heads=2, d_ff=16, max_history=6), 2, 6, 3,
                         1e-6)
        reward_train._init(rm, 0)
        rng = np.random.default_rng(0)
        sids = torch.tensor([[r // 6, r % 6] for r in range(36)])
        hist = torch.from_numpy(rng.integers(0, 36, (8, 6)))
        rows = torch.from_numpy(rng.integers(1, 36, (8, 4, 3)))
        rows[:, :2, 0] = 0  # sessions 0, 1 of every point hold item 0: the better ones
        true = (rows == 0).any(-1).float()
        w = torch.tensor(rm.rc.weights)
        opt = torch.optim.Adam(rm.parameters(), lr=0.02)

        def rewards():
            hs = sids[hist].repeat_interleave(4, 0)
            return rm.item_probs(hs, torch.ones(hs.shape[:2], dtype=torch.bool),
                                 sids[rows.reshape(-1, 3)]).mean(1) @ w

        for _ in range(60):
            loss = reward_train.pair_loss(rewards(), true.reshape(-1), [4] * 8, 10.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        R = rewards().detach().reshape(8, 4)
        self.assertTrue(bool((R[:, :2].min(1).values > R[:, 2:].max(1).values).all()))


class RewardTraining(unittest.TestCase):
    def test_pairwise_training_with_selection_on_held_out_users(self):
        """The whole training path with the pairwise term, held-out users and selection:
        the kept step is the one with the best calibration pair accuracy."""
        model, cat = tiny()
        split = tiny_split(cat)
        ratings = {u: {i: float(i % 5 + 1) for i in s} for u, s in split.seqs.items()}
        cfg = {"reward": {"d_model": 8, "n_heads": 2, "d_ff": 16, "max_history": 6,
                          "signals": ["watch", "like"], "weights": [0.5, 0.5]},
               "window": 4, "points_per_user": 0, "model_points": 24, "model_beam": 4,
               "model_per_point": 4, "steps": 12, "batch": 16, "warmup": 2,
               "pair_weight": 1.0, "pair_points": 4, "select_every": 3,
               "calibrate_by": "users", "calibrate_share": 0.34}
        rm, rep = reward_train.train_reward_model(split, cat, ratings, model.cfg, cfg, 0, model,
                                                  decode="reference")
        self.assertIn(rep["selected_step"], (3, 6, 9, 12))
        self.assertEqual(rep["log"][-1]["calibration_pair_accuracy_best"][1], rep["selected_step"])
        self.assertGreater(rep["log"][0]["pair_loss"], 0.0)
        self.assertIn("minus_beam_ci95", rep["heldout_valid"]["model_session_pairs"])
        self.assertFalse(rm.training)


class Ipa(unittest.TestCase):
    def test_session_logp_is_the_beam_score(self):
        """DPO's log pi(session) is the score the constrained beam search gave it."""
        model, cat = tiny()
        hist = [100, 105, 111, 117]
        res = beam_search(model, cat, Request(hist, 4, 4, [], True))
        rows = {int(i): r for r, i in enumerate(cat.item_ids)}
        sids_t = torch.from_numpy(cat.sids.astype(np.int64))
        hs, hm, ts = ipa._pair_tensors([hist] * 4, [s.items for s in res.sessions], rows, sids_t,
                                       model.cfg.max_history)
        with torch.no_grad():
            lp = ipa.session_logp(model, hs, hm, ts)
        for got, s in zip(lp.tolist(), res.sessions):
            self.assertAlmostEqual(got, s.score, delta=1e-4 * abs(s.score))

    def test_rewards_are_reward_model_score(self):
        model, cat = tiny()
        rm = tiny_rm(model)
        hist = [100 + i for i in range(9)]  # longer than the reward model's max_history
        sessions = [[110, 111, 112], [113, 120, 101]]
        R, r = ipa.rewards_of(rm, cat, hist, sessions)
        h = torch.tensor([cat.sid_of(i) for i in hist])
        s = torch.tensor([[cat.sid_of(i) for i in x] for x in sessions])
        R2, r2 = rm.score(h, s)
        np.testing.assert_array_equal(R, R2.numpy())
        np.testing.assert_array_equal(r, r2.numpy())

    def test_reference_generation_matches_beam_search(self):
        model, cat = tiny()
        hists = [[100, 101], [120, 121, 122]]
        got = generate.sessions(model, cat, hists, 4, 2, "reference")
        for h, g in zip(hists, got):
            res = beam_search(model, cat, Request(h, 4, 2, [], True))
            self.assertEqual([x["items"] for x in g], [s.items for s in res.sessions])

    def test_one_round_moves_towards_chosen(self):
        """A DPO-only round (no NTP signal: share 1, tiny data) raises the chosen
        sessions' log-probability margin over the rejected ones."""
        model, cat = tiny()
        rm = tiny_rm(model)
        split = tiny_split(cat)
        rows = cat.row_of_id
        cfg = {"rounds": 1, "share": 1.0, "points_per_user": 1, "n_sessions": 6, "steps": 15,
               "batch": 4, "dpo_batch": 6, "lr": 3e-3, "dpo_weight": 5.0, "eval_beam": 4,
               "eval_results": 4, "select": "last"}
        c = ipa.config(cfg)
        # run_ipa draws round 1's pairs first from default_rng(seed + 1): the same pairs
        hs, ch, rj, stats = ipa.make_pairs(model, rm, cat, split, c, np.random.default_rng(1),
                                           "reference", None, 1)
        self.assertEqual(stats["pairs"], len(ch))
        self.assertGreater(len(ch), 0)
        sids_t = torch.from_numpy(cat.sids.astype(np.int64))
        ph, pm, pc = ipa._pair_tensors(hs, ch, rows, sids_t, model.cfg.max_history)
        _, _, pr = ipa._pair_tensors(hs, rj, rows, sids_t, model.cfg.max_history)
        with torch.no_grad():
            before = (ipa.session_logp(model, ph, pm, pc) - ipa.session_logp(model, ph, pm, pr))
        aligned, log = ipa.run_ipa(model, rm, cfg, split, rows, cat, 0, None, decode="reference")
        self.assertEqual([r["round"] for r in log["rounds"]], [0, 1])
        self.assertEqual({k: v for k, v in log["rounds"][1]["pairs"].items() if "seconds" not in k},
                         {k: v for k, v in stats.items() if "seconds" not in k})
        self.assertIsNot(aligned, model)
        with torch.no_grad():
            after = (ipa.session_logp(aligned, ph, pm, pc) - ipa.session_logp(aligned, ph, pm, pr))
        self.assertGreater(float((after - before).mean()), 0.0)
        # the input model is untouched
        with torch.no_grad():
            again = (ipa.session_logp(model, ph, pm, pc) - ipa.session_logp(model, ph, pm, pr))
        torch.testing.assert_close(again, before)

    def test_ablation_share0_is_the_control(self):
        model, cat = tiny()
        rm = tiny_rm(model)
        split = tiny_split(cat)
        cfg = {"rounds": 1, "points_per_user": 1, "n_sessions": 4, "steps": 3, "batch": 4,
               "eval_beam": 4, "eval_results": 4}
        out = ipa.ablation(model, rm, cfg, split, cat.row_of_id, cat, 0, shares=(0.0, 0.0, 0.5),
                           decode="reference")
        self.assertEqual(sorted(out), ["0.0", "0.5"])
        self.assertEqual(out["0.5"]["rounds"][1]["pairs"]["pairs"], 3)
        self.assertNotIn("vs_share0", out["0.0"]["rounds"][1])
        self.assertIn("reward_top_session", out["0.5"]["rounds"][1]["vs_share0"])
        self.assertNotIn("_per_user", out["0.5"])
        # share 0 twice (same key) gives the same figures: training is deterministic
        _, again = ipa.run_ipa(model, rm, {**cfg, "share": 0.0}, split, cat.row_of_id, cat, 0,
                               decode="reference")
        self.assertEqual(again["rounds"][1]["eval"]["beam_metrics"],
                         out["0.0"]["rounds"][1]["eval"]["beam_metrics"])


    def test_select_round_keeps_session_metrics(self):
        v = lambda r, h, a: {"mean_reward_top_session": r, "top_session_hits": h, "any@10": a}
        base = v(0.30, 0.50, 0.60)
        # round 2 has the highest reward but lowers hits; round 3 lowers any@10
        self.assertEqual(ipa.select_round([base, v(0.31, 0.50, 0.60), v(0.40, 0.49, 0.70),
                                           v(0.35, 0.55, 0.59)]), 1)
        # nothing raises the reward: round 0 is served
        self.assertEqual(ipa.select_round([base, v(0.30, 0.60, 0.70), v(0.20, 0.60, 0.70)]), 0)
        self.assertEqual(ipa.select_round([base, v(0.32, 0.51, 0.60), v(0.33, 0.50, 0.61)]), 2)

    def test_gate_serves_the_selected_round(self):
        model, cat = tiny()
        rm = tiny_rm(model)
        split = tiny_split(cat)
        cfg = {"rounds": 2, "share": 1.0, "points_per_user": 1, "n_sessions": 4, "steps": 3,
               "batch": 4, "lr": 3e-3, "eval_beam": 4, "eval_results": 4}
        aligned, log = ipa.run_ipa(model, rm, cfg, split, cat.row_of_id, cat, 0, decode="reference")
        valid = [r["valid"] for r in log["rounds"]]
        self.assertEqual(len(valid), 3)
        self.assertEqual(log["served_round"], ipa.select_round(valid))
        # the served weights are that round's: its validation figures come back
        again = ipa._valid_eval(aligned, rm, cat, split, ipa.config(cfg), None, "reference", None, 1)
        self.assertEqual(again, valid[log["served_round"]])


if __name__ == "__main__":
    unittest.main()
