"""PyTorch reference implementation of the OneRec model contract (MODEL_SPEC.md v1)."""

from .beam import Request, SearchResult, Session, beam_search
from .catalog import Catalog, EligibleTrie
from .checkpoint import load_checkpoint, round_params_, save_checkpoint
from .config import OneRecConfig
from .init import random_init
from .model import OneRec, RouterLog

SPEC_VERSION = 1

__all__ = [
    "SPEC_VERSION", "Catalog", "EligibleTrie", "OneRec", "OneRecConfig", "Request",
    "RouterLog", "SearchResult", "Session", "beam_search", "load_checkpoint",
    "random_init", "round_params_", "save_checkpoint",
]
