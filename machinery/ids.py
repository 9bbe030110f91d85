"""Ids that must be unique but need not be secret: request, trace and span ids.

They come from the `random` module (seeded from the OS at start, and again in every forked gunicorn
worker), not from `os.urandom`, which is a system call each time: a sync event draws several, and
under load each one also hands the interpreter lock to another thread. What must not be guessed
(callback tokens) still comes from `os.urandom`.
"""

from __future__ import annotations

import random


def random_hex(bits: int) -> str:
    """`bits` random bits as lower-case hex, never all zeros (W3C trace context forbids those)."""
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"
