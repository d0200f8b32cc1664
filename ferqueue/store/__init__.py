"""The adversarial store: HDF5 shard files written atomically, merged into one readable store;
its folder layout, clean-up and merge lock are in ferqueue.store.layout."""

from ferqueue.store.hdf5 import (
    FIELDS,
    AdversarialStore,
    StoredFile,
    merge_shards,
    read_shard,
    verify_shard,
    write_shard,
)

__all__ = [
    "FIELDS",
    "AdversarialStore",
    "StoredFile",
    "merge_shards",
    "read_shard",
    "verify_shard",
    "write_shard",
]
