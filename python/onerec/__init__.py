"""OneRec on-device inference engine: `Engine(path).recommend(histories, ...)`."""

from ._onerec import Engine, OneRecError, UnknownItemError, __version__

__all__ = ["Engine", "OneRecError", "UnknownItemError", "__version__"]
