"""A MongoDB wire-protocol server over mongomock, for tests that need several processes to share a store.

No MongoDB server can be installed on the build machines, yet the multi-process tests (gunicorn plus
`machinery worker` processes, a worker killed with -9) need one store that every process reaches
through pymongo. This speaks enough of the protocol (OP_QUERY handshake, OP_MSG commands) for the
commands Machinery's store sends, executing each one under a single lock against mongomock.

With MACHINERY_TEST_MONGO_URI set, the tests use that real server instead.

Run alone: python -m tests.support.mongowire PORT
"""

from __future__ import annotations

import functools
import socketserver
import struct
import sys
import threading
import time
from datetime import datetime, timezone

import bson
import mongomock
from bson.codec_options import CodecOptions
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from machinery.store.limits import INSERT_TOO_LARGE, MAX_DOCUMENT_BYTES, UPDATE_TOO_LARGE

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
CODE_NAMES = {2: "BadValue", 8: "UnknownError", 11000: "DuplicateKey", 26: "NamespaceNotFound",
              27: "IndexNotFound", 59: "CommandNotFound", 67: "CannotCreateIndex", 72: "InvalidOptions",
              85: "IndexOptionsConflict", 86: "IndexKeySpecsConflict"}
MAX_EXPIRE_AFTER_S = 2**31 - 1
# What the driver asks the server about itself and the connection: answered at once even when slow.
HANDSHAKE = frozenset({"hello", "ismaster", "isMaster", "ping", "buildinfo", "buildInfo", "endSessions"})
CODEC = CodecOptions(tz_aware=False)
HEADER = struct.Struct("<iiii")


def _size(document) -> int:
    return len(bson.encode(document, codec_options=CODEC))


class TooLargeAfterUpdate(Exception):
    """An update whose result MongoDB would refuse (code 17419); the document is left as it was."""


def _updated_within_limit(collection, query, apply, many=False, sort=None):
    """Run `apply()` (an update of the documents `query` finds) as MongoDB would: a document it would
    take past 16 MiB is left as it was and the update refused (TooLargeAfterUpdate). mongomock
    stores any size, so each document is kept before and measured after."""
    before = list(collection.find(query, sort=sort)) if many else [collection.find_one(query, sort=sort)]
    before = [document for document in before if document is not None]
    result = apply()
    too_large = False
    for document in before:
        after = collection.find_one({"_id": document["_id"]})
        if after is not None and _size(after) > MAX_DOCUMENT_BYTES:
            collection.replace_one({"_id": document["_id"]}, document)
            too_large = True
    if too_large:
        raise TooLargeAfterUpdate(UPDATE_TOO_LARGE)
    return result


class WireStore:
    """Executes decoded commands against one mongomock client, one at a time."""

    def __init__(self):
        self.client = mongomock.MongoClient()
        self.lock = threading.Lock()
        self.connections = 0
        self.delay_s = 0.0  # set to answer every command but the handshake this late: a slow server
        self.collmods: list[tuple] = []  # every index collMod applied: (collection, index, expireAfterSeconds)

    def run(self, command: dict, sequences: dict) -> dict:
        name = next(iter(command))
        handler = getattr(self, "cmd_" + name.lower(), None)
        if handler is None:
            return {"ok": 0.0, "errmsg": f"no such command: '{name}'", "code": 59, "codeName": "CommandNotFound"}
        database = self.client[command.get("$db", "test")]
        if self.delay_s and name not in HANDSHAKE:
            time.sleep(self.delay_s)
        with self.lock:
            try:
                return {**handler(database, command, sequences), "ok": 1.0}
            except OperationFailure as error:
                code = error.code or 8
                return {"ok": 0.0, "errmsg": (error.details or {}).get("errmsg") or str(error), "code": code,
                        "codeName": CODE_NAMES.get(code, "UnknownError")}
            except Exception as error:  # an unsupported form: answer it as the server would, not hang up
                return {"ok": 0.0, "errmsg": f"{type(error).__name__}: {error}", "code": 2}

    # -- handshake and server ---------------------------------------------------------------

    def cmd_hello(self, database, command, sequences):
        # No logicalSessionTimeoutMinutes: the driver then uses no sessions, which this server lacks.
        return {"ismaster": True, "isWritablePrimary": True, "helloOk": True,
                "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000, "localTime": datetime.now(timezone.utc),
                "minWireVersion": 0, "maxWireVersion": 21, "connectionId": 1}

    cmd_ismaster = cmd_hello

    def cmd_ping(self, database, command, sequences):
        return {}

    def cmd_buildinfo(self, database, command, sequences):
        return {"version": "7.0.0", "versionArray": [7, 0, 0, 0]}

    def cmd_endsessions(self, database, command, sequences):
        return {}

    def cmd_killcursors(self, database, command, sequences):
        return {"cursorsKilled": command.get("cursors", [])}

    # -- reads ------------------------------------------------------------------------------

    @staticmethod
    def _cursor(database, collection, documents):
        return {"cursor": {"id": 0, "ns": f"{database.name}.{collection}", "firstBatch": documents}}

    def cmd_find(self, database, command, sequences):
        collection = database[command["find"]]
        cursor = collection.find(command.get("filter") or {}, command.get("projection"))
        if command.get("sort"):
            cursor = cursor.sort(list(command["sort"].items()))
        if command.get("skip"):
            cursor = cursor.skip(command["skip"])
        if command.get("limit"):
            cursor = cursor.limit(abs(command["limit"]))
        return self._cursor(database, command["find"], list(cursor))

    def cmd_aggregate(self, database, command, sequences):
        return self._cursor(database, command["aggregate"],
                            list(database[command["aggregate"]].aggregate(command["pipeline"])))

    def cmd_count(self, database, command, sequences):
        return {"n": database[command["count"]].count_documents(command.get("query") or {})}

    def cmd_listindexes(self, database, command, sequences):
        indexes = [{"v": 2, "name": name, "key": dict(info.pop("key")), **info}
                   for name, info in database[command["listIndexes"]].index_information().items()]
        return self._cursor(database, command["listIndexes"], indexes)

    def cmd_listcollections(self, database, command, sequences):
        return self._cursor(database, "$cmd.listCollections",
                            [{"name": name, "type": "collection"} for name in database.list_collection_names()])

    # -- writes -----------------------------------------------------------------------------

    def cmd_insert(self, database, command, sequences):
        collection = database[command["insert"]]
        documents = command.get("documents") or sequences.get("documents", [])
        errors, n = [], 0
        for index, document in enumerate(documents):
            size = _size(document)
            if size > MAX_DOCUMENT_BYTES:  # MongoDB's words and code (2, BadValue)
                errors.append({"index": index, "code": 2, "errmsg": f"{INSERT_TOO_LARGE}. size in bytes: "
                                                                    f"{size}, max size: {MAX_DOCUMENT_BYTES}"})
                if command.get("ordered", True):
                    break
                continue
            try:
                collection.insert_one(document)
                n += 1
            except DuplicateKeyError as error:
                errors.append({"index": index, "code": 11000, "errmsg": str(error)})
                if command.get("ordered", True):
                    break
        return {"n": n, **({"writeErrors": errors} if errors else {})}

    def cmd_update(self, database, command, sequences):
        collection = database[command["update"]]
        n = modified = 0
        upserted, errors = [], []
        for index, spec in enumerate(command.get("updates") or sequences.get("updates", [])):
            method = collection.update_many if spec.get("multi") else collection.update_one
            try:
                apply = functools.partial(method, spec["q"], spec["u"], upsert=spec.get("upsert", False))
                result = _updated_within_limit(collection, spec["q"], apply, many=bool(spec.get("multi")))
            except DuplicateKeyError as error:
                errors.append({"index": index, "code": 11000, "errmsg": str(error)})
                continue
            except TooLargeAfterUpdate as error:
                errors.append({"index": index, "code": 17419, "errmsg": str(error)})
                continue
            n += result.matched_count
            modified += result.modified_count
            if result.upserted_id is not None:
                n += 1
                upserted.append({"index": index, "_id": result.upserted_id})
        reply = {"n": n, "nModified": modified}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def cmd_delete(self, database, command, sequences):
        collection = database[command["delete"]]
        n = 0
        for spec in command.get("deletes") or sequences.get("deletes", []):
            method = collection.delete_one if spec.get("limit") == 1 else collection.delete_many
            n += method(spec["q"]).deleted_count
        return {"n": n}

    def cmd_findandmodify(self, database, command, sequences):
        collection = database[command["findAndModify"]]
        query, sort = command.get("query") or {}, list((command.get("sort") or {}).items()) or None
        projection = command.get("fields")
        if command.get("remove"):
            value = collection.find_one_and_delete(query, projection=projection, sort=sort)
            return {"lastErrorObject": {"n": int(value is not None)}, "value": value}
        existed = collection.find_one(query, {"_id": 1}, sort=sort) is not None
        try:
            value = _updated_within_limit(collection, query, lambda: collection.find_one_and_update(
                query, command["update"], projection=projection, sort=sort, upsert=command.get("upsert", False),
                return_document=ReturnDocument.AFTER if command.get("new") else ReturnDocument.BEFORE), sort=sort)
        except DuplicateKeyError as error:
            raise OperationFailure(str(error), code=11000) from None
        except TooLargeAfterUpdate as error:
            raise OperationFailure(str(error), code=17419) from None
        last = {"n": int(existed or command.get("upsert", False)), "updatedExisting": existed}
        return {"lastErrorObject": last, "value": value}

    def cmd_createindexes(self, database, command, sequences):
        collection = database[command["createIndexes"]]
        for index in command["indexes"]:
            options = {key: value for key, value in index.items() if key not in ("key", "v", "ns")}
            keys = list(index["key"].items())
            if self._refuse_index(collection, keys, options):
                continue  # the very index exists: nothing to do, as MongoDB answers
            collection.create_index(keys, **options)
        return {"numIndexesAfter": len(collection.index_information())}

    @staticmethod
    def _refuse_index(collection, keys: list, options: dict) -> bool:
        """Refuse what MongoDB refuses and mongomock lets through: expireAfterSeconds out of range
        (67), the same keys under another name (85), the same name with other keys or options (86).
        True when the same index already exists."""
        seconds = options.get("expireAfterSeconds")
        if seconds is not None and not (isinstance(seconds, (int, float)) and 0 <= seconds <= MAX_EXPIRE_AFTER_S):
            raise _failure(67, "TTL index 'expireAfterSeconds' option must be within an acceptable range, "
                               "try a non-negative number less than 2147483648.")
        name = options.get("name")
        wanted = _index_identity(options)
        for existing, info in collection.index_information().items():
            same_keys = [tuple(pair) for pair in info["key"]] == keys
            if existing == name:
                if not same_keys or _index_identity(info) != wanted:
                    raise _failure(86, "An existing index has the same name as the requested index. "
                                       f"Requested index: {dict(keys)} {wanted}, existing index: "
                                       f"{dict(info['key'])} {_index_identity(info)}")
                return True
            if same_keys and _index_identity(info, identifying=True) == _index_identity(options, identifying=True):
                raise _failure(85, f"Index already exists with a different name: {existing}")
        return False

    def cmd_collmod(self, database, command, sequences):
        """collMod of one index's expireAfterSeconds, by name or key pattern (what a TTL change sends)."""
        collection = database[command["collMod"]]
        change = command.get("index")
        if not isinstance(change, dict):
            return {}
        indexes = collection._store.indexes  # mongomock's own index records (its TTL ones are the same dicts)
        name = change.get("name")
        if name is None and "keyPattern" in change:
            name = next((found for found, info in indexes.items()
                         if dict(info["key"]) == dict(change["keyPattern"])), None)
        if name not in indexes:
            raise _failure(27, f"cannot find index {change.get('name') or change.get('keyPattern')} "
                               f"for ns {database.name}.{command['collMod']}")
        reply = {}
        if "expireAfterSeconds" in change:
            seconds = change["expireAfterSeconds"]
            if not (isinstance(seconds, (int, float)) and 0 <= seconds <= MAX_EXPIRE_AFTER_S):
                raise _failure(72, "TTL index 'expireAfterSeconds' option must be within an acceptable range")
            if "expireAfterSeconds" not in indexes[name]:
                raise _failure(72, f"no expireAfterSeconds field to update on index {name}: not a TTL index")
            old = indexes[name]["expireAfterSeconds"]
            indexes[name]["expireAfterSeconds"] = int(seconds)
            self.collmods.append((collection.name, name, int(seconds)))
            reply = {"expireAfterSeconds_old": old, "expireAfterSeconds_new": int(seconds)}
        return reply

    def cmd_dropindexes(self, database, command, sequences):
        collection = database[command["dropIndexes"]]
        if command["index"] == "*":
            collection.drop_indexes()
        else:
            collection.drop_index(command["index"])
        return {}

    def cmd_drop(self, database, command, sequences):
        database.drop_collection(command["drop"])
        return {}

    def cmd_dropdatabase(self, database, command, sequences):
        self.client.drop_database(database.name)
        return {}


def _failure(code: int, message: str) -> OperationFailure:
    return OperationFailure(message, code=code, details={"errmsg": message, "code": code})


def _index_identity(index: dict, identifying: bool = False) -> dict:
    """The options MongoDB compares between two indexes; `identifying`: only those that tell two
    indexes on the same keys apart (two such may coexist under two names)."""
    names = ("partialFilterExpression", "collation") if identifying else \
        ("partialFilterExpression", "collation", "expireAfterSeconds", "unique", "sparse")
    options = {key: index[key] for key in names if index.get(key) not in (None, False)}
    return options


def _read_exactly(sock, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _cstring(data: bytes, offset: int) -> tuple[str, int]:
    end = data.index(b"\x00", offset)
    return data[offset:end].decode(), end + 1


def _parse_msg(body: bytes) -> tuple[dict, dict]:
    """An OP_MSG body: the command document and any document sequences by identifier."""
    offset, command, sequences = 4, None, {}
    end = len(body) - (4 if struct.unpack_from("<I", body)[0] & 1 else 0)  # checksum present
    while offset < end:
        kind = body[offset]
        offset += 1
        size = struct.unpack_from("<i", body, offset)[0]
        if kind == 0:
            command = bson.decode(body[offset:offset + size], CODEC)
            offset += size
        else:
            section_end = offset + size
            identifier, position = _cstring(body, offset + 4)
            documents = []
            while position < section_end:
                doc_size = struct.unpack_from("<i", body, position)[0]
                documents.append(bson.decode(body[position:position + doc_size], CODEC))
                position += doc_size
            sequences[identifier] = documents
            offset = section_end
    return command, sequences


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        store: WireStore = self.server.store
        sock = self.request
        while True:
            try:
                length, request_id, _, opcode = HEADER.unpack(_read_exactly(sock, 16))
                body = _read_exactly(sock, length - 16)
            except (ConnectionError, OSError):
                return
            if opcode == OP_MSG:
                command, sequences = _parse_msg(body)
                reply = bson.encode(store.run(command, sequences), codec_options=CODEC)
                payload = struct.pack("<IB", 0, 0) + reply
                try:
                    sock.sendall(HEADER.pack(16 + len(payload), 0, request_id, OP_MSG) + payload)
                except OSError:  # the client gave up waiting (a timeout) and closed the connection
                    return
            elif opcode == OP_QUERY:
                _, collection_end = _cstring(body, 4)
                document = bson.decode(body[collection_end + 8:collection_end + 8 +
                                            struct.unpack_from("<i", body, collection_end + 8)[0]], CODEC)
                name = next(iter(document))
                if name == "$query":
                    document = document["$query"]
                reply = bson.encode(store.run({**document, "$db": "admin"}, {}), codec_options=CODEC)
                payload = struct.pack("<iqii", 8, 0, 0, 1) + reply
                sock.sendall(HEADER.pack(16 + len(payload), 0, request_id, OP_REPLY) + payload)
            else:
                return


class WireServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        super().__init__((host, port), Handler)
        self.store = WireStore()
        self.thread = None

    @property
    def uri(self) -> str:
        host, port = self.server_address
        return f"mongodb://{host}:{port}/machinery"

    def start(self) -> WireServer:
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


if __name__ == "__main__":
    server = WireServer(int(sys.argv[1]) if len(sys.argv) > 1 else 27017)
    print(server.uri, flush=True)
    server.serve_forever()
