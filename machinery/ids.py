"""Ids that must be unique but need not be secret: request, trace and span ids.

They come from the `random` module (seeded from the OS at start, and again in every forked gunicorn
worker), not from `os.urandom`, which is a system call each time: a sync event draws several, and
under load each one also hands the interpreter lock to another thread. What must not be guessed
(callback tokens) still comes from `os.urandom`, drawn a block at a time (`secret_hex`).
"""

from __future__ import annotations

import os
import random
import threading

SECRET_BLOCK = 1536  # bytes of os.urandom a thread draws at once: 64 callback tokens
_drawn = threading.local()


def random_hex(bits: int) -> str:
    """`bits` random bits as lower-case hex, never all zeros (W3C trace context forbids those)."""
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


def secret_hex(nbytes: int) -> str:
    """`nbytes` bytes from os.urandom as hex, for what must not be guessed. Each thread draws a block
    at once and hands out each byte of it once: a map of 1,000 calls makes 16 system calls, not 1,000.
    A forked child forgets the block it inherited, so that it never hands out its parent's bytes."""
    state = _drawn.__dict__
    block, at = state.get("block", b""), state.get("at", 0)
    if at + nbytes > len(block):
        block, at = os.urandom(max(SECRET_BLOCK, nbytes)), 0
        state["block"] = block
    state["at"] = at + nbytes
    return block[at:at + nbytes].hex()


def _forget() -> None:
    _drawn.__dict__.clear()


os.register_at_fork(after_in_child=_forget)
