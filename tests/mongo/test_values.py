"""The `values` bucket on every store: GridFS's layout and indexes, content addressing, the sweeper."""

from __future__ import annotations

import hashlib

import pytest
from bson import ObjectId
from bson.dbref import DBRef

from machinery.runtime.payloads import Payloads, is_ref, shown
from machinery.store.values import CHUNK_BYTES

MIB = 1024 * 1024


def an_event(store) -> str:
    return str(store.events.insert_one({"status": "completed", "context": {}}).inserted_id)


def test_a_value_is_chunked_as_gridfs_does_and_read_back_whole(store):
    event_id = an_event(store)
    data = bytes(range(256)) * (4 * MIB // 256) + b"tail"
    ref, sha256 = store.values.put(event_id, data)
    assert sha256 == hashlib.sha256(data).hexdigest() and ref == f"{event_id}-{sha256}"
    chunks = list(store.values.chunks.find({"files_id": ref}).sort("n", 1))
    assert [chunk["n"] for chunk in chunks] == list(range(len(data) // CHUNK_BYTES + 1))
    assert all(len(chunk["data"]) <= CHUNK_BYTES for chunk in chunks) and CHUNK_BYTES == 255 * 1024
    document = store.values.files.find_one({"_id": ref})
    assert document["length"] == len(data) and document["chunkSize"] == CHUNK_BYTES
    assert document["filename"] == ref and document["metadata"]["event_id"] == event_id
    assert store.values.read(ref) == data
    assert b"".join(store.values.stream(ref)) == data
    assert store.values.read(f"{event_id}-{'0' * 64}") is None


def test_the_same_value_of_the_same_event_is_stored_once(store):
    event_id, other = an_event(store), an_event(store)
    first = store.values.put(event_id, b'"same"')
    assert store.values.put(event_id, b'"same"') == first
    assert store.values.put(other, b'"same"')[0] != first[0]  # per event: removed with its event
    assert store.values.count() == (2, 2) and store.values.written == 2


def test_chunks_a_stopped_writer_left_are_replaced(store):
    event_id = an_event(store)
    data = b"x" * (CHUNK_BYTES * 2 + 10)
    ref = f"{event_id}-{hashlib.sha256(data).hexdigest()}"
    store.values.chunks.insert_one({"files_id": ref, "n": 0, "data": b"garbage"})
    assert store.values.put(event_id, data)[0] == ref
    assert store.values.read(ref) == data


def test_gridfs_indexes_are_made(store):
    chunks = {index["name"]: index for index in store.values.chunks.list_indexes()}
    files = {index["name"]: dict(index["key"]) for index in store.values.files.list_indexes()}
    assert dict(chunks["files_id_1_n_1"]["key"]) == {"files_id": 1, "n": 1} and chunks["files_id_1_n_1"]["unique"]
    assert files["filename_1_uploadDate_1"] == {"filename": 1, "uploadDate": 1}


def test_pymongo_gridfs_reads_the_files_on_mongodb(store):
    if store.embedded:
        pytest.skip("the gridfs package refuses mongomock's database; the layout is checked above")
    import gridfs

    event_id = an_event(store)
    data = b"y" * (CHUNK_BYTES + 7)
    ref, _ = store.values.put(event_id, data)
    assert gridfs.GridFSBucket(store.db, "values").open_download_stream(ref).read() == data


def test_a_reference_in_an_event_is_a_dbref_read_back_as_one(store):
    event_id = an_event(store)
    values = Payloads(store, event_id, threshold=1024)
    kept = values.offload({"big": "z" * 5000, "small": "s"})
    assert is_ref(kept["big"]) and kept["small"] == "s"
    store.update_event(event_id, {"$set": {"context": kept}})
    read = store.get_event(event_id)["context"]["big"]
    assert isinstance(read, DBRef) and is_ref(read)
    assert shown(read) == {"$ref": kept["big"].id, "bytes": 5002, "sha256": kept["big"].sha256}
    assert Payloads(store, event_id).resolve({"big": read}) == {"big": "z" * 5000}


def test_a_budget_offloads_the_largest_values_until_the_rest_fits(store):
    values = Payloads(store, an_event(store), threshold=100 * 1024)
    kept = values.offload({f"k{number}": "v" * (8 * 1024) for number in range(6)} | {"tiny": 1}, 17 * 1024)
    inline = [key for key, value in kept.items() if not is_ref(value)]
    assert len(inline) == 2 + 1 and "tiny" in inline


def test_the_sweeper_removes_the_files_of_removed_events_only(store):
    kept, removed = an_event(store), an_event(store)
    kept_ref, _ = store.values.put(kept, b'"kept"')
    store.values.put(removed, b'"gone"')
    store.values.put(removed, b'"gone too"')
    store.events.delete_one({"_id": ObjectId(removed)})  # what the TTL monitor does
    assert store.sweep_values(grace_s=3600) == 0  # too young: its event may not be stored yet
    assert store.sweep_values(batch=1, grace_s=0) + store.sweep_values(batch=1, grace_s=0) \
        + store.sweep_values(batch=1, grace_s=0) + store.sweep_values(batch=1, grace_s=0) == 2
    assert store.values.count() == (1, 1)
    assert store.values.read(kept_ref) == b'"kept"'


def test_deleting_events_deletes_their_files(store):
    event_id, other = an_event(store), an_event(store)
    store.values.put(event_id, b"1" * (CHUNK_BYTES * 3))
    store.values.put(other, b"2")
    store.values.chunks.insert_one({"files_id": f"{event_id}-{'f' * 64}", "n": 0, "data": b"left by a stopped writer"})
    assert store.delete_events([event_id]) == 1
    assert store.values.count() == (1, 1) and store.values.files.find_one()["metadata"]["event_id"] == other


def test_the_sweeper_removes_chunks_a_stopped_writer_left_of_removed_events(store):
    kept, removed = an_event(store), an_event(store)
    for event_id in (kept, removed):  # chunks written, files documents never
        store.values.chunks.insert_many([{"files_id": f"{event_id}-{'a' * 64}", "n": number, "data": b"x"}
                                         for number in range(3)])
    store.events.delete_one({"_id": ObjectId(removed)})
    assert store.sweep_values(grace_s=3600) == 0
    assert store.sweep_values(grace_s=0) == 1
    assert {chunk["files_id"] for chunk in store.values.chunks.find()} == {f"{kept}-{'a' * 64}"}
