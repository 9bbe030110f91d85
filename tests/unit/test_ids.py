"""Ids and secret tokens: unique, of the asked size, and never repeated across a fork."""

from __future__ import annotations

import os

from machinery import ids


def test_secret_hex_hands_out_each_drawn_byte_once():
    drawn = [ids.secret_hex(24) for _ in range(3 * ids.SECRET_BLOCK // 24)]  # three blocks' worth
    assert all(len(token) == 48 and int(token, 16) >= 0 for token in drawn)
    assert len(set(drawn)) == len(drawn)
    assert len(ids.secret_hex(ids.SECRET_BLOCK + 8)) == 2 * (ids.SECRET_BLOCK + 8)


def test_a_forked_child_never_hands_out_its_parents_bytes():
    ids.secret_hex(24)  # this thread now holds a block, which the child inherits
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, ids.secret_hex(24).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 100).decode()
    os.close(read)
    assert len(theirs) == 48
    assert theirs != ids.secret_hex(24)  # the parent's next bytes are not the child's
