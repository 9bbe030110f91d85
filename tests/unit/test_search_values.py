"""Search attributes of contexts as a store answers them."""

from __future__ import annotations

import bson
from bson.int64 import Int64

from machinery import search


def test_a_whole_number_past_32_bits_read_back_from_mongodb_stays_searchable():
    # GIVEN a context with a millisecond timestamp and a large order number, as pymongo decodes it from
    # MongoDB without the store's decoder (a BSON int64 as Int64, not int; the store reads them as ints)
    sent = {"order": {"number": 5_000_000_000, "at_ms": 1_733_500_000_000, "lines": 3}}
    read_back = bson.decode(bson.encode({"context": sent}))["context"]
    assert type(read_back["order"]["number"]) is Int64
    paths = ["order.number", "order.at_ms", "order.lines"]
    # WHEN the next step's write folds the attributes in, THEN they are the ones the event was sent with
    assert search.fold({"search": paths}, {"context": read_back})["attrs"] == search.attributes(paths, sent) == [
        {"k": "order.number", "v": 5_000_000_000}, {"k": "order.at_ms", "v": 1_733_500_000_000},
        {"k": "order.lines", "v": 3}]


def test_what_search_never_keeps_stays_out_whatever_its_type():
    assert not search.searchable(2**63)
    assert not search.searchable(float("inf"))
    assert not search.searchable({"a": 1}) and not search.searchable([1]) and not search.searchable(None)
    assert search.searchable(True) and search.searchable(-(2**63)) and search.searchable(Int64(-(2**63)))
