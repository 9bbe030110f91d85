"""The embedded store's events collection: mongomock, made to answer the way MongoDB's indexes do.

mongomock answers every query, update and unique check by scanning the whole collection, and copies
and compares whole documents on every write. The events collection is the one that grows, so here it
finds documents by `_id` directly, skips partial unique indexes a document is outside of, and updates
one event in place. Results are those of stock mongomock; only the cost differs. Only `store.py`
uses this module, and only for `mongomock://` URIs.
"""

from __future__ import annotations

from bson import ObjectId

_IN_PLACE_OPERATORS = {"$set", "$unset", "$push", "$inc"}


def _unique_fields(collection) -> set[str]:
    """The top-level fields any unique index of a mongomock collection covers (and `_id`)."""
    fields = {"_id"}
    for index in collection._store.indexes.values():
        if index.get("unique"):
            fields.update(key.split(".", 1)[0] for key, _ in index["key"])
    return fields


def embedded_events(collection):
    """The embedded store's events collection, made to find by `_id` and check partial unique
    indexes the way MongoDB's indexes do, without scanning every document.

    mongomock answers every query, update and unique check by scanning the whole collection, so
    each step's write cost grew with the number of events stored. Results are unchanged: a query
    naming an ObjectId `_id` can only match that document, and a document outside a partial
    index's filter cannot clash in it. Left as is if mongomock's internals are not the expected ones.
    """
    from mongomock.collection import Collection
    from mongomock.filtering import filter_applies
    from mongomock.helpers import patch_datetime_awareness_in_document

    if type(collection) is not Collection or not all(hasattr(collection, name) for name in (
            "_iter_documents", "_ensure_uniques", "_store", "_update", "_apply_update_document")):
        return collection

    class IdLookups(Collection):
        def _iter_documents(self, filter):
            named = filter.get("_id") if isinstance(filter, dict) else None
            if isinstance(named, ObjectId):
                oids = (named,)
            elif (isinstance(named, dict) and list(named) == ["$in"] and isinstance(named["$in"], list)
                  and all(isinstance(oid, ObjectId) for oid in named["$in"])):
                oids = tuple(dict.fromkeys(named["$in"]))
            else:
                return super()._iter_documents(filter)
            documents = (self._store[oid] for oid in oids if oid in self._store)
            return (document for document in documents if filter_applies(filter, document))

        def _ensure_uniques(self, new_data):
            for index in self._store.indexes.values():
                partial = index.get("partialFilterExpression")
                if index.get("unique") and (partial is None or filter_applies(partial, new_data)):
                    return super()._ensure_uniques(new_data)
            return None

        def _update(self, spec, document, upsert=False, manipulate=False, multi=False, check_keys=False,
                    **options):
            # mongomock snapshots and compares the whole document on every update, only to tell
            # "modified" from "matched" and to roll back a unique-index clash. An update of one
            # event by `_id`, with plain operators on fields no unique index covers, can clash with
            # nothing, so it is applied in place; it counts as modified whenever it matched.
            oid = spec.get("_id") if isinstance(spec, dict) else None
            if (upsert or multi or manipulate or check_keys or any(options.values())
                    or not isinstance(oid, ObjectId) or not isinstance(document, dict)
                    or not set(document) <= _IN_PLACE_OPERATORS
                    or {key.split(".", 1)[0] for fields in document.values() for key in fields} & _unique_fields(self)):
                return super()._update(spec, document, upsert, manipulate, multi, check_keys, **options)
            document = patch_datetime_awareness_in_document(document)
            existing = next(self._iter_documents(spec), None)
            if existing is not None:
                self._apply_update_document(existing, spec, document, False)
            matched = int(existing is not None)
            return {"n": matched, "nModified": matched, "ok": 1, "upserted": None, "updatedExisting": bool(matched)}

    collection.__class__ = IdLookups
    return collection
