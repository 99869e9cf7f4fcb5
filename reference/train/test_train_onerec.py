"""Checks of the OneRec training loss (needs torch, not the data):

    python3 -m unittest reference/train/test_train_onerec.py     # from the repository root
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from onerec_ref import OneRecConfig  # noqa: E402
from train import train_onerec  # noqa: E402
from train.data import Split  # noqa: E402
from train.train_onerec import session_loss  # noqa: E402

torch.set_num_threads(1)


class SessionLoss(unittest.TestCase):
    def setUp(self):
        # Two examples of m = 3 target items; the second has only 2 (end of its training part).
        self.tok = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
        self.tm = torch.tensor([[True, True, True], [True, True, False]])

    def test_default_is_the_unweighted_mean(self):
        # What the training loop computed before the option: sum over unmasked items / count.
        old = (self.tok * self.tm).sum() / int(self.tm.sum())
        self.assertEqual(float(session_loss(self.tok, self.tm)), float(old))
        self.assertEqual(float(session_loss(self.tok, self.tm, 1.0)), float(old))
        self.assertAlmostEqual(float(old), (1 + 2 + 3 + 4 + 5) / 5)

    def test_first_item_weighted_mean(self):
        w = 3.0
        loss = session_loss(self.tok, self.tm, w)
        # first items 1 and 4 weigh 3, the others 1; the masked 6 weighs nothing
        self.assertAlmostEqual(float(loss), (3 * 1 + 2 + 3 + 3 * 4 + 5) / (3 + 1 + 1 + 3 + 1), places=6)
        loss.backward()
        g = self.tok.grad
        self.assertAlmostEqual(float(g[0, 0]), 3 / 9, places=6)
        self.assertAlmostEqual(float(g[0, 1]), 1 / 9, places=6)
        self.assertEqual(float(g[1, 2]), 0.0)

    def test_constant_nll_gives_the_same_loss_for_any_weight(self):
        # Normalised by the total weight: the loss stays an average (same scale as w = 1).
        tok = torch.full((4, 5), 2.5)
        tm = torch.ones(4, 5, dtype=torch.bool)
        tm[3, 2:] = False
        for w in (1.0, 2.0, 4.0, 0.5):
            self.assertAlmostEqual(float(session_loss(tok, tm, w)), 2.5, places=6)


def tiny_setup():
    cfg = OneRecConfig(d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=2, d_ff=32,
                       n_experts=4, top_k=2, d_expert=16, moe_enc_layers=[], moe_dec_layers=[1],
                       n_levels=2, codebook_size=6, session_len=3, max_history=8, rms_eps=1e-6)
    rng = np.random.default_rng(0)
    ids = list(range(100, 130))
    seqs = {u: [int(x) for x in rng.choice(ids, 16, replace=False)] for u in range(6)}
    split = Split(3, list(range(6)), seqs)
    row_of = {i: r for r, i in enumerate(ids)}
    sids = np.array([[r // 6, r % 6] for r in range(30)], dtype=np.int32)
    return cfg, split, row_of, sids


class TrainOption(unittest.TestCase):
    def run_train(self, **extra):
        cfg, split, row_of, sids = tiny_setup()
        tcfg = {"steps": 4, "eval_every": 2, "batch": 8, "lr": 0.01, "weight_decay": 0.0,
                "warmup_steps": 1, "min_lr_ratio": 0.1, "dropout": 0.0, "history_dropout": 0.0,
                "aux_loss": 0.01, **extra}
        # Without valid_fn the evaluation with the best validation NLL is kept.
        return train_onerec.train(cfg, tcfg, split, row_of, sids, seed=0)

    def test_default_and_explicit_one_train_identically(self):
        m0, log0 = self.run_train()
        m1, log1 = self.run_train(first_item_weight=1.0)
        self.assertEqual(log1["first_item_weight"], 1.0)
        self.assertEqual([e["train_nll"] for e in log0["evals"]], [e["train_nll"] for e in log1["evals"]])
        for (k, a), b in zip(m0.state_dict().items(), m1.state_dict().values()):
            self.assertTrue(torch.equal(a, b), k)

    def test_weight_changes_training(self):
        m1, _ = self.run_train(first_item_weight=1.0)
        m4, log4 = self.run_train(first_item_weight=4.0)
        self.assertEqual(log4["first_item_weight"], 4.0)
        diff = max(float((a - b).abs().max()) for a, b in zip(m1.state_dict().values(),
                                                               m4.state_dict().values()))
        self.assertGreater(diff, 1e-6)


if __name__ == "__main__":
    unittest.main()
