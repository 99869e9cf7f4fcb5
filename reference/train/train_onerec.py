"""Training of the OneRec reference model (`onerec_ref.OneRec`, spec tensor names) on
chronological per-user sequences: at every position t of a user's training part, the
history is the items before t (the newest `max_history` kept) and the target the next
`session_len` items (fewer at the end of the training part: the missing ones are masked
out of the loss). Loss: NLL of every target code (per item; the first item optionally
weighted more, `first_item_weight`), plus a small Switch-style load-balance term on each MoE
router so that experts do not collapse.
"""

from __future__ import annotations

import copy
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from onerec_ref import OneRec, OneRecConfig

from .data import Split


def make_examples(seqs: list[list[int]], n_hist: int, m: int, min_t: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """seqs of catalog rows -> (hist [S, n_hist] left-padded with -1, tgt [S, m] -1 padded)
    with one example per position t >= min_t of every sequence."""
    hist, tgt = [], []
    for s in seqs:
        for t in range(min_t, len(s)):
            h = s[max(0, t - n_hist) : t]
            hist.append([-1] * (n_hist - len(h)) + h)
            g = s[t : t + m]
            tgt.append(g + [-1] * (m - len(g)))
    return np.array(hist, dtype=np.int64), np.array(tgt, dtype=np.int64)


def init_params(model: OneRec, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    depth = model.cfg.n_enc_layers + model.cfg.n_dec_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name != "dec.bos":
                p.fill_(1.0)  # RMSNorm weights
            elif name in ("enc.embed", "dec.embed", "enc.pos", "dec.pos", "dec.bos", "head"):
                p.normal_(0.0, 0.02 if name.endswith("pos") or name == "dec.bos" else 0.1,
                          generator=g)
            else:
                std = 1.0 / math.sqrt(p.shape[-1])
                if name.endswith((".o", ".down")):
                    std /= math.sqrt(2 * depth)  # residual branches start small
                p.normal_(0.0, std, generator=g)


class LoadBalance:
    """Collects E * sum_e f_e * P_e / top_k per MoE layer on every forward (Switch
    Transformer): f_e = share of routed tokens sent to e, P_e = mean router prob."""

    def __init__(self, model: OneRec) -> None:
        self.terms: list[torch.Tensor] = []
        for mod in model.modules():
            if type(mod).__name__ == "MoE":
                mod.register_forward_pre_hook(self._hook)

    def _hook(self, mod, args) -> None:
        x = args[0].reshape(-1, args[0].shape[-1])
        p = torch.softmax(x @ mod.router.T, dim=-1)
        top = torch.topk(p.detach(), mod.top_k, dim=-1).indices
        f = torch.zeros(p.shape[-1]).index_add_(0, top.flatten(), torch.ones(top.numel()))
        f = f / top.numel()
        self.terms.append(p.shape[-1] * (f * p.mean(0)).sum())

    def pop(self) -> torch.Tensor:
        out = torch.stack(self.terms).mean() if self.terms else torch.zeros(())
        self.terms = []
        return out


def batch_tensors(hist: np.ndarray, tgt: np.ndarray, sids: torch.Tensor,
                  drop: float = 0.0, g: torch.Generator | None = None):
    h = torch.from_numpy(hist)
    t = torch.from_numpy(tgt)
    mask = h >= 0
    keep = int(mask.sum(1).max())
    h, mask = h[:, -keep:], mask[:, -keep:]
    if drop > 0:
        dropped = torch.rand(mask.shape, generator=g) < drop
        dropped[:, -1] = False  # the newest item always stays
        mask = mask & ~dropped
    tmask = t >= 0
    return sids[h.clamp(min=0)], mask, sids[t.clamp(min=0)], tmask


def item_nll(model: OneRec, hs, hm, ts) -> torch.Tensor:
    """-> [B, m]: each target item's NLL (the sum over its code tokens)."""
    logp = model.forward_train(hs, hm, ts)  # [B, m, L, K]
    return -logp.gather(-1, ts.long().unsqueeze(-1)).squeeze(-1).sum(-1)


def nll(model: OneRec, hs, hm, ts, tm) -> tuple[torch.Tensor, int]:
    tok = item_nll(model, hs, hm, ts)
    return (tok * tm).sum(), int(tm.sum())


def session_loss(tok: torch.Tensor, tm: torch.Tensor, first_item_weight: float = 1.0
                 ) -> torch.Tensor:
    """Weighted mean of the target items' NLL `tok` [B, m] over the unmasked ones `tm`:
    the first target item weighs `first_item_weight`, the later ones 1. The next-item
    ranking is exactly the first item's (evaluate.first_item_scores), while the session loss
    spreads the model over m items; w > 1 adds emphasis on the first without dropping the
    session. Dividing by the total weight (not the item count) keeps the loss an average, so
    its scale, and with it the step size under the same lr and clipping, stays that of w = 1;
    w = 1 is exactly the unweighted mean (sum / count)."""
    if first_item_weight == 1.0:
        return (tok * tm).sum() / int(tm.sum())
    w = tm.to(tok.dtype).clone()
    w[:, 0] *= first_item_weight
    return (tok * w).sum() / w.sum()


@torch.no_grad()
def evaluate_nll(model: OneRec, hist, tgt, sids, bs: int = 512) -> float:
    model.eval()
    total, count = 0.0, 0
    for k in range(0, len(hist), bs):
        s, c = nll(model, *batch_tensors(hist[k : k + bs], tgt[k : k + bs], sids))
        total, count = total + float(s), count + c
    return total / max(count, 1)


def add_dropout(model: OneRec, p: float) -> list:
    """Train-only dropout without touching the model code: forward hooks drop units of
    every attention and FFN/MoE output (residual dropout) and of the encoder and decoder
    inputs (embedding dropout), only while `model.training`. Inference, checkpoints and
    fixtures are unchanged. Returns the hook handles (`h.remove()` takes them off)."""
    if p <= 0:
        return []
    handles = []

    def out_hook(mod, args, out):
        return F.dropout(out, p, mod.training)

    def in_hook(mod, args):
        if not mod.training:
            return None
        return (F.dropout(args[0], p, True),) + tuple(args[1:])

    for mod in model.modules():
        if type(mod).__name__ in ("Attention", "FFN", "MoE"):
            handles.append(mod.register_forward_hook(out_hook))
    handles.append(model.enc.register_forward_pre_hook(in_hook))
    handles.append(model.dec.register_forward_pre_hook(in_hook))
    return handles


def lr_factor(step: int, warm: int, total: int, floor: float) -> float:
    """Linear warm-up, then a cosine from 1 to `floor` over `total` steps: the rate never
    reaches 0, so where the run stops is decided by validation (early stopping), not by
    the schedule."""
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def valid_points(split: Split, row_of: dict[int, int], n: int) -> tuple[np.ndarray, np.ndarray]:
    v_hist, v_tgt = [], []
    for u in split.users:
        h, t = split.point(u, "valid")
        h = [row_of[i] for i in h][-n:]
        v_hist.append([-1] * (n - len(h)) + h)
        v_tgt.append([row_of[i] for i in t])
    return np.array(v_hist), np.array(v_tgt)


def train(cfg: OneRecConfig, tcfg: dict, split: Split, row_of: dict[int, int],
          sids: np.ndarray, seed: int, valid_fn=None) -> tuple[OneRec, dict]:
    """-> (model at the evaluation with the best validation score, training log).

    `valid_fn(model) -> float` (higher is better; run_all passes NDCG@10 of the exact
    first-item ranking on the validation points) selects the checkpoint and stops the run
    after `patience` evaluations without a gain; without it, validation NLL selects."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n, m = cfg.max_history, cfg.session_len
    train_seqs = [[row_of[i] for i in split.train_part(u)] for u in split.users]
    hist, tgt = make_examples(train_seqs, n, m)
    v_hist, v_tgt = valid_points(split, row_of, n)
    sids_t = torch.from_numpy(sids.astype(np.int64))

    model = OneRec(cfg)
    init_params(model, seed)
    balance = LoadBalance(model)
    drop_handles = add_dropout(model, tcfg.get("dropout", 0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    bs, total_steps, every = tcfg["batch"], tcfg["steps"], tcfg["eval_every"]
    warm, floor = tcfg["warmup_steps"], tcfg.get("min_lr_ratio", 0.0)
    patience = tcfg.get("patience", 10 ** 9)
    first_w = float(tcfg.get("first_item_weight", 1.0))  # session_loss
    # A wall-clock cap (run_all --train-minutes) for a shared machine: checked at
    # evaluations only, recorded in the log.
    max_seconds = tcfg.get("max_seconds")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total_steps, floor))
    log = {"examples": int(len(hist)), "batch": bs, "max_steps": total_steps, "evals": [],
           "dropout": tcfg.get("dropout", 0.0), "min_lr_ratio": floor, "patience": patience,
           "first_item_weight": first_w,
           "selection": "valid NDCG@10 (exact first-item ranking)" if valid_fn else "valid NLL"}
    best, best_state, best_step, bad = -math.inf, None, 0, 0
    perm, pos = torch.randperm(len(hist), generator=g).numpy(), 0
    tot, cnt, aux_tot, t0 = 0.0, 0, 0.0, time.time()
    step = 0
    for step in range(1, total_steps + 1):
        model.train()
        if pos + bs > len(perm):  # next pass over the examples, reshuffled
            perm, pos = torch.randperm(len(hist), generator=g).numpy(), 0
        idx = np.sort(perm[pos : pos + bs])
        pos += bs
        hs, hm, ts, tm = batch_tensors(hist[idx], tgt[idx], sids_t, tcfg["history_dropout"], g)
        tok = item_nll(model, hs, hm, ts)
        # The logged train NLL stays the unweighted per-item mean (comparable across w).
        s, c = (tok * tm).sum(), int(tm.sum())
        aux = balance.pop()
        loss = session_loss(tok, tm, first_w) + tcfg["aux_loss"] * aux
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tot, cnt, aux_tot = tot + s.item(), cnt + c, aux_tot + aux.item()
        if step % every == 0 or step == total_steps:
            v = evaluate_nll(model, v_hist, v_tgt, sids_t)
            score = valid_fn(model) if valid_fn else -v
            balance.terms = []
            entry = {"step": step, "epoch": round(step * bs / len(hist), 2),
                     "lr": round(opt.param_groups[0]["lr"], 6),
                     "train_nll": round(tot / cnt, 4), "valid_nll": round(v, 4),
                     "load_balance": round(aux_tot / every, 4),
                     "seconds": round(time.time() - t0, 1)}
            if valid_fn:
                entry["valid_ndcg@10"] = round(score, 4)
            log["evals"].append(entry)
            print(f"  onerec {entry}", file=sys.stderr)
            tot, cnt, aux_tot = 0.0, 0, 0.0
            if score > best:
                best, best_state, best_step, bad = score, copy.deepcopy(model.state_dict()), step, 0
            else:
                bad += 1
                if bad >= patience:
                    break
            if max_seconds and time.time() - t0 > max_seconds:
                log["stopped_by_time_limit"] = True
                break
    for h in drop_handles:
        h.remove()
    model.load_state_dict(best_state)
    log["steps_run"] = step
    log["best_step"] = best_step
    log["stopped_early"] = step < total_steps and not log.get("stopped_by_time_limit", False)
    log["best_valid_nll" if not valid_fn else "best_valid_ndcg@10"] = round(abs(best), 4)
    log["seconds"] = round(time.time() - t0, 1)
    return model.eval(), log
