"""The adversarial store: HDF5 shard files written atomically, merged into one readable store."""

from ferqueue.store.hdf5 import (
    FIELDS,
    AdversarialStore,
    ShardInfo,
    merge_shards,
    read_shard,
    shard_path,
    verify_shard,
    write_shard,
)

__all__ = [
    "FIELDS",
    "AdversarialStore",
    "ShardInfo",
    "merge_shards",
    "read_shard",
    "shard_path",
    "verify_shard",
    "write_shard",
]
