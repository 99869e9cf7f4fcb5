"""OneRec evaluation.

Two ways to rank items for the next-item metrics, both with the history excluded:
- `onerec_eval` (the test figures): the engine's decoding semantics, the reference
  constrained session beam search (`onerec_ref.beam_search`). The ranked item list is the
  search's first-item beams (`SearchResult.first_items`: the beams right after the first
  item's last code, one constrained item-level beam of width `beam`, best first by the
  sum of the item's L code log-probabilities; docs/DECISIONS.md "Item list"). Session
  metrics use the sessions the same search returns.
- `first_item_scores` / `exact_eval` (validation, model selection): the exact log-probability
  of every catalog item as the first item, in one batched teacher-forced decoder pass over
  the SID prefixes (no beam: every item is scored). The beam's list is the top `beam` of
  this ranking up to beam-search pruning, so both rank alike; the report gives both.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from onerec_ref import Catalog, OneRec, Request, beam_search
from onerec_ref.model import rms_norm

from . import metrics
from .data import Split


class PrefixTable:
    """The catalog's SIDs as a prefix tree: per level s the distinct prefixes of length s
    (`parent[s]`: the row of each one's parent prefix at level s-1, `code[s]`: its last
    code; level 0 is the empty prefix) and per item its prefix row at every level."""

    def __init__(self, sids: np.ndarray) -> None:
        L = sids.shape[1]
        rows = sids.tolist()
        self.parent, self.code, self.item_prefix = [], [], []
        prev = {(): 0}
        for s in range(L):
            if s == 0:
                index = {(): 0}
            else:
                index = {p: r for r, p in enumerate(sorted({tuple(x[:s]) for x in rows}))}
            if s > 0:
                self.parent.append(torch.tensor([prev[p[:-1]] for p in index], dtype=torch.long))
                self.code.append(torch.tensor([p[-1] for p in index], dtype=torch.long))
            self.item_prefix.append(torch.tensor([index[tuple(x[:s])] for x in rows], dtype=torch.long))
            prev = index
        self.sids = torch.from_numpy(sids.astype(np.int64))  # [N, L]


@torch.no_grad()
def first_item_scores(model: OneRec, table: PrefixTable, hist_rows: list[list[int]]) -> torch.Tensor:
    """Histories as catalog rows (oldest first) -> [B, N] log p(first item = row), the sum
    of its L code log-probabilities (MODEL_SPEC: log_softmax over all K at every level,
    no renormalisation over the trie), exactly what a beam search scores an item with.

    One incremental decoder pass per level over the distinct SID prefixes of that level
    (teacher forcing down the prefix tree, K/V of the parent prefix reused)."""
    cfg = model.cfg
    n, L = cfg.max_history, cfg.n_levels
    B = len(hist_rows)
    kept = [h[-n:] for h in hist_rows]
    w = max(len(h) for h in kept)
    rows = torch.tensor([[0] * (w - len(h)) + h for h in kept], dtype=torch.long)
    mask = torch.tensor([[False] * (w - len(h)) + [True] * len(h) for h in kept])
    counts = mask.sum(1, keepdim=True)
    positions = (n - counts + mask.long().cumsum(1) - 1).clamp(0, n - 1)
    hs = table.sids[rows].masked_fill(~mask.unsqueeze(-1), 0)
    enc_out = model.enc(model.enc.embed_items(hs, positions), mask)  # [B, h, d]
    layers = model.dec.layers
    cross = [layer.cross_attn.kv(enc_out.unsqueeze(1)) for layer in layers]  # [B, 1, h, d]
    cross_mask = mask[:, None, None, :]  # [B, 1, 1, h]
    past = [None] * len(layers)
    total = torch.zeros(B, table.sids.shape[0])
    for s in range(L):
        if s == 0:
            x = (model.dec.bos + model.dec.pos[0]).expand(B, 1, 1, -1)
        else:
            x = (model.dec.embed[s - 1][table.code[s - 1]] + model.dec.pos[s])  # [P_s, d]
            x = x[None, :, None, :].expand(B, -1, -1, -1)
            past = [(k[:, table.parent[s - 1]], v[:, table.parent[s - 1]]) for k, v in past]
        for i, layer in enumerate(layers):
            x, past[i] = layer(x, past[i], None, cross[i], cross_mask, None, f"dec.{i}")
        y = rms_norm(x[:, :, 0], model.dec.norm, model.dec.eps)  # [B, P_s, d]
        logp = model.level_logprobs(y, s)  # [B, P_s, K]
        total += logp[:, table.item_prefix[s], :].gather(
            -1, table.sids[:, s].expand(B, -1).unsqueeze(-1)).squeeze(-1)
    return total


def exact_rankings(model: OneRec, table: PrefixTable, split: Split, which: str,
                   row_of: dict[int, int], item_ids: np.ndarray, k: int,
                   users: list[int] | None = None, bs: int = 32) -> dict[int, list[int]]:
    """Per user the top-k item ids by exact first-item probability, history excluded."""
    model.eval()
    users = users if users is not None else split.users
    out = {}
    for b in range(0, len(users), bs):
        batch = users[b : b + bs]
        hists = [[row_of[i] for i in split.point(u, which)[0]] for u in batch]
        s = first_item_scores(model, table, hists)
        for r, h in enumerate(hists):
            s[r, h] = -torch.inf
        top = torch.topk(s, k, dim=-1).indices.numpy()
        for r, u in enumerate(batch):
            out[u] = [int(item_ids[j]) for j in top[r]]
    return out


def exact_eval(model: OneRec, table: PrefixTable, split: Split, which: str,
               row_of: dict[int, int], item_ids: np.ndarray, ks: list[int],
               users: list[int] | None = None) -> tuple[dict, dict[int, dict]]:
    """-> (mean metrics, per-user metric rows) with the exact first-item ranking."""
    users = users if users is not None else split.users
    ranked = exact_rankings(model, table, split, which, row_of, item_ids, max(ks + [split.m]), users)
    rows = {u: metrics.point_metrics(ranked[u], split.point(u, which)[1], ks, split.m)
            for u in users}
    return metrics.mean_metrics(list(rows.values())), rows


def onerec_eval(model: OneRec, catalog: Catalog, split: Split, which: str, beam: int,
                results: int, ks: list[int], reference: bool = False, bs: int = 32
                ) -> tuple[dict, dict[int, dict], dict[int, float], dict[int, dict]]:
    """The engine's decoding semantics. -> (mean metrics, per user the returned sessions as
    {score, items} and the first-item list, per user the smallest score gap that decided
    the answer (reference search only: how close it was to a tie), per-user metric rows).

    Next-item metrics rank the first-item beams; session metrics use the sessions.
    `reference`: one `onerec_ref.beam_search` per user (what the engine is compared with);
    else `batched_beam_search` over `bs` users at a time (same search, faster)."""
    rows, answers, gaps = {}, {}, {}
    listed = []
    t0 = time.time()
    trie = None if reference else TrieTables(PrefixTable(catalog.sids))
    users = split.users
    for b in range(0, len(users), 1 if reference else bs):
        batch = users[b : b + (1 if reference else bs)]
        if reference:
            hist = split.point(batch[0], which)[0]
            res = beam_search(model, catalog, Request(hist, beam, results, [], True))
            got = [{"sessions": [{"score": x.score, "items": x.items} for x in res.sessions],
                    "first_items": [[i, sc] for i, sc in res.first_items]}]
            gaps[batch[0]] = res.min_score_gap
        else:
            hists = [[catalog.row_of_id[i] for i in split.point(u, which)[0]] for u in batch]
            ids = catalog.item_ids
            got = [{"sessions": [{"score": sc, "items": [int(ids[r]) for r in its]} for sc, its in o["sessions"]],
                    "first_items": [[int(ids[r]), sc] for r, sc in o["first_items"]]}
                   for o in batched_beam_search(model, trie, hists, beam, results)]
        for u, a in zip(batch, got):
            true_next = split.point(u, which)[1]
            answers[u] = a
            sess = [x["items"] for x in a["sessions"]]
            rows[u] = metrics.all_metrics([i for i, _ in a["first_items"]], sess, true_next, ks, split.m)
            listed.append(len(metrics.ranked_from_sessions(sess)))
        if (b // len(batch) + 1) % max(1, 200 // len(batch)) == 0:
            print(f"  beam search {which}: {b + len(batch)}/{len(users)} users "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr)
    out = metrics.mean_metrics(list(rows.values()))
    # How much of the catalog the sessions show: they share most items, which is why the
    # item list is formed from the first-item beams and not pooled from sessions.
    out["distinct_items_in_sessions_mean"] = sum(listed) / len(listed)
    return out, answers, gaps, rows


class TrieTables:
    """The catalog's eligible-count trie as dense tables over the prefix ids of
    `PrefixTable`: `count[s]` [P_s, K] = catalog items under (prefix, code), `child[s]`
    [P_s, K] = the id of prefix + (code,) at level s + 1 (-1 where none; at the last level
    the item's catalog row)."""

    def __init__(self, table: PrefixTable) -> None:
        sids = table.sids
        N, L = sids.shape
        K = int(sids.max()) + 1
        self.L, self.K = L, K
        self.count, self.child = [], []
        for s in range(L):
            P = int(table.item_prefix[s].max()) + 1
            cnt = torch.zeros(P, K, dtype=torch.long)
            cnt.index_put_((table.item_prefix[s], sids[:, s]), torch.ones(N, dtype=torch.long), accumulate=True)
            ch = torch.full((P, K), -1, dtype=torch.long)
            nxt = table.item_prefix[s + 1] if s + 1 < L else torch.arange(N)
            ch[table.item_prefix[s], sids[:, s]] = nxt
            self.count.append(cnt)
            self.child.append(ch)
        self.table = table


@torch.no_grad()
def batched_beam_search(model: OneRec, trie: TrieTables, hist_rows: list[list[int]], beam: int,
                        results: int) -> list[dict]:
    """The constrained session beam search of MODEL_SPEC (as `onerec_ref.beam_search`,
    history excluded) for many users at once: same candidate order (score descending,
    then lower beam, then lower code; float32 sums), same trie rule (a beam may extend a
    prefix only towards an eligible item its session does not hold yet). Batched matrix
    products may round the last bit differently from the one-user reference, so a near
    tie can flip; the figures use it, the engine comparison uses the reference.
    -> per user {"sessions": [(score, [rows])], "first_items": [(row, score)]}."""
    cfg = model.cfg
    n, L, m, K = cfg.max_history, cfg.n_levels, cfg.session_len, cfg.codebook_size
    tab = trie.table
    B, Bw = len(hist_rows), beam
    kept = [h[-n:] for h in hist_rows]
    w = max(len(h) for h in kept)
    rows = torch.tensor([[0] * (w - len(h)) + h for h in kept], dtype=torch.long)
    mask = torch.tensor([[False] * (w - len(h)) + [True] * len(h) for h in kept])
    counts = mask.sum(1, keepdim=True)
    positions = (n - counts + mask.long().cumsum(1) - 1).clamp(0, n - 1)
    hs = tab.sids[rows].masked_fill(~mask.unsqueeze(-1), 0)
    enc_out = model.enc(model.enc.embed_items(hs, positions), mask)
    layers = model.dec.layers
    cross = [layer.cross_attn.kv(enc_out.unsqueeze(1)) for layer in layers]
    cross_mask = mask[:, None, None, :]
    # Per-user eligible counts: the catalog's minus each user's (distinct) history items.
    cnt = [c.unsqueeze(0).repeat(B, 1, 1) for c in trie.count]
    for b, h in enumerate(hist_rows):
        hr = torch.tensor(sorted(set(h)), dtype=torch.long)
        for s in range(L):
            cnt[s][b].index_put_((tab.item_prefix[s][hr], tab.sids[hr, s]),
                                 torch.full((len(hr),), -1, dtype=torch.long), accumulate=True)
    barange = torch.arange(B)[:, None]
    score = torch.zeros(B, 1)
    alive = torch.ones(B, 1, dtype=torch.bool)
    pid = torch.zeros(B, 1, dtype=torch.long)  # prefix id at the current level
    prefix = torch.zeros(B, 1, L, dtype=torch.long)
    sess = torch.full((B, 1, m), -1, dtype=torch.long)  # item rows, -1 = none yet
    past = [None] * len(layers)
    first = None

    def run(x):  # x [B, R, d] -> normalised decoder output [B, R, d]
        x = x.unsqueeze(2)
        for li, layer in enumerate(layers):
            p = past[li]
            if p is not None and p[0].shape[1] != x.shape[1]:
                p = (p[0].expand(-1, x.shape[1], -1, -1), p[1].expand(-1, x.shape[1], -1, -1))
            x, past[li] = layer(x, p, None, cross[li], cross_mask, None, f"dec.{li}")
        return rms_norm(x[:, :, 0], model.dec.norm, model.dec.eps)

    for i in range(m):
        for s in range(L):
            t = i * (L + 1) + s
            R = score.shape[1]
            if s == 0:
                if i > 0:  # the previous item's last code at slot L (not scored)
                    run(model.dec.embed[L - 1][prefix[:, :, L - 1]] + model.dec.pos[t - 1])
                y = run((model.dec.bos + model.dec.pos[t]).expand(B, R, -1))
            else:
                y = run(model.dec.embed[s - 1][prefix[:, :, s - 1]] + model.dec.pos[t])
            logp = model.level_logprobs(y, s)  # [B, R, K]
            # Session items already under this prefix use up its count.
            srows = sess.clamp(min=0)
            under = (sess >= 0) & (tab.item_prefix[s][srows] == pid.unsqueeze(-1))
            used = torch.zeros(B, R, K, dtype=torch.long)
            used.scatter_add_(2, tab.sids[srows, s], under.long())
            allowed = (cnt[s][barange, pid] - used > 0) & alive.unsqueeze(-1)
            cand = (score.unsqueeze(-1) + logp).masked_fill(~allowed, -torch.inf).reshape(B, R * K)
            order = torch.sort(-cand, dim=1, stable=True).indices[:, :Bw]
            top = cand.gather(1, order)
            alive = top > -torch.inf
            parent, code = order // K, order % K
            score = top
            prefix = prefix[barange, parent].clone()
            prefix[:, :, s] = code
            sess = sess[barange, parent].clone()
            nxt = trie.child[s][pid[barange, parent], code]
            if s == L - 1:
                sess[:, :, i] = torch.where(alive, nxt, -1)
                pid = torch.zeros_like(nxt)
            else:
                pid = nxt.clamp(min=0)
            past = [(k[barange, parent], v[barange, parent]) for k, v in past]
            if i == 0 and s == L - 1:
                first = (sess[:, :, 0].clone(), score.clone(), alive.clone())
    out = []
    for b in range(B):
        a = alive[b]
        sessions = [(float(score[b, r]), sess[b, r].tolist()) for r in range(score.shape[1]) if a[r]][:results]
        fi = [(int(first[0][b, r]), float(first[1][b, r])) for r in range(first[0].shape[1]) if first[2][b, r]]
        out.append({"sessions": sessions, "first_items": fi})
    return out
