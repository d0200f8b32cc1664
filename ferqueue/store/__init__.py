"""The adversarial store: HDF5 shard files written atomically, compactly encoded and read back
bit-exact; the merged store, a manifest over the verified shards; its folder layout, clean-up
and merge lock are in ferqueue.store.layout."""

from ferqueue.store.hdf5 import (
    FIELDS,
    FORMAT_VERSION,
    AdversarialStore,
    StoredFile,
    export_store,
    merge_shards,
    read_outcomes,
    read_shard,
    verify_shard,
    write_outcomes,
    write_shard,
)

__all__ = [
    "FIELDS",
    "FORMAT_VERSION",
    "AdversarialStore",
    "StoredFile",
    "export_store",
    "merge_shards",
    "read_outcomes",
    "read_shard",
    "verify_shard",
    "write_outcomes",
    "write_shard",
]
