"""Typed stubs of the `onerec` package (the engine is the Rust extension `onerec._onerec`)."""

from os import PathLike
from typing import Literal, Sequence, TypedDict, Union

__version__: str

class OneRecError(RuntimeError):
    """An error of the engine (model loading, backend)."""

class UnknownItemError(OneRecError):
    """A history names an item id that is not in the model's catalog."""

class Session(TypedDict):
    score: float
    """Sum of the log-probabilities of the session's codes (higher is better; <= 0)."""
    items: list[int]
    """`session_len` item ids, in order."""
    sids: list[list[int]]
    """Each item's semantic ID (`n_levels` codes)."""

Backend = Literal["auto", "cpu", "wgpu", "cuda"]

class Engine:
    """A loaded model; thread-safe (the GIL is released while the engine works)."""

    def __init__(
        self, path: Union[str, PathLike[str], None] = None, *, backend: Backend = "auto"
    ) -> None:
        """Loads a model file or checkpoint directory; without `path`, the built-in
        MovieLens-100K model. Raises OneRecError when the model or backend is unusable,
        ValueError for an unknown backend name."""
    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        *,
        beam: int = 16,
        results: int = 5,
        exclude: Union[Sequence[int], Sequence[Sequence[int]], None] = None,
        exclude_history: bool = False,
    ) -> list[list[Session]]:
        """Sessions for each history (oldest item first), decoded as one batch: one list per
        history of up to `results` sessions, best first. `exclude` is one list of ids for
        every user or one list per user. Raises UnknownItemError (a history item is not in
        the catalog) or ValueError (empty history, beam outside 1..=4096, results outside
        1..=beam)."""
    @property
    def config(self) -> dict[str, object]:
        """The model's config.json fields."""
    @property
    def backend(self) -> str:
        """The backend in use, e.g. "cpu (4 threads)"."""
    @property
    def items(self) -> list[int]:
        """The catalog's item ids."""
    def sid(self, item_id: int) -> list[int]:
        """The semantic ID of a catalog item; UnknownItemError otherwise."""
    def __contains__(self, item_id: int) -> bool: ...
    def __len__(self) -> int: ...
