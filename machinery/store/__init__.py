"""The store: the only package that talks to MongoDB (`store`), and the embedded store's events (`embedded`)."""

from machinery.store.store import ACTIVE, EPOCH, FINISHED, HELD, Store, pending_webhook, utcnow

__all__ = ["ACTIVE", "EPOCH", "FINISHED", "HELD", "Store", "pending_webhook", "utcnow"]
