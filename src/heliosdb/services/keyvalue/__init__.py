"""The key-value data model (what the Redis interface serves), stored in engine tables.

See schema.py for the tables, store.py for transactions, one module per value type.
"""

from heliosdb.services.keyvalue.service import KeyValue
from heliosdb.services.keyvalue.store import Meta, Tx

__all__ = ["KeyValue", "Meta", "Tx"]
