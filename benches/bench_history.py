"""The benchmark request shared by the Rust and PyTorch timers: a deterministic history."""


def history(n_items: int, length: int) -> list[int]:
    # Item ids are 1..N in synthetic checkpoints; stride by a prime to spread them.
    return [1 + (i * 7919) % n_items for i in range(length)]
