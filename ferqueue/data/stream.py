"""Labelled images read in shuffled batches from wherever they live, in memory that does not grow
with their number: the dataset's memory-mapped cache, a store's shards, or arrays.

A source is read in blocks (a range of its examples; for a store, within one shard, so a
block costs one shard read). An epoch permutes every block of every source together, fills a
window of whole blocks, permutes the examples inside the window and hands out batches: a
chunk-aware shuffle whose memory is the window plus the batches waiting in the prefetch queue,
however many examples there are. A background thread reads ahead while the model computes.

The stream accounts for the bytes it holds (``held_bytes``, ``max_held_bytes``), so that its
budget can be asserted without looking at the process's memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

BLOCK = 1024  # examples per block of a source
WINDOW = 4096  # examples shuffled together (whole blocks; at least one block)
PREFETCH = 2  # batches read ahead


class Examples:
    """A source: ``len``, ``blocks()`` as (start, stop) ranges, ``read(start, stop)`` -> (x, y)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def blocks(self) -> list[tuple[int, int]]:
        return [(s, min(s + BLOCK, len(self))) for s in range(0, len(self), BLOCK)]

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ArrayExamples(Examples):
    """Arrays already in memory, or memory-mapped (features, small sets, tests)."""

    def __init__(self, x, y):
        if len(x) != len(y):
            from ferqueue.errors import ConfigError

            raise ConfigError(f"{len(x)} images but {len(y)} labels")
        self.x, self.y = x, np.asarray(y, np.int64)

    def __len__(self) -> int:
        return len(self.y)

    def read(self, start: int, stop: int):
        return np.asarray(self.x[start:stop], np.float32), self.y[start:stop]


class DatasetExamples(Examples):
    """Some examples of a dataset (sorted indices, e.g. a split's training side), read from its
    memory-mapped images."""

    def __init__(self, dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, start: int, stop: int):
        x, y = self.dataset.take(self.indices[start:stop])
        return x, y.astype(np.int64)


class StoredExamples(Examples):
    """One attack of an adversarial store; its blocks never cross a shard."""

    def __init__(self, store, key: str):
        self.store, self.key = store, key

    def __len__(self) -> int:
        return self.store.size(self.key)

    def blocks(self) -> list[tuple[int, int]]:
        ranges = [(e["start"], e["stop"]) for e in self.store.shards(self.key)] if self.store.format_version > 1 \
            else [(0, len(self))]
        return [(s, min(s + BLOCK, stop)) for start, stop in ranges for s in range(start, stop, BLOCK)]

    def read(self, start: int, stop: int):
        part = self.store.read(self.key, ("images", "labels"), rows=slice(start, stop))
        return part["images"], part["labels"]


class Stream:
    """Batches from several sources, shuffled chunk-wise (``epoch``) or in order (``ordered``)."""

    def __init__(self, sources: list[Examples], batch_size: int, seed: int = 0, window: int = WINDOW,
                 prefetch: int = PREFETCH):
        self.sources = [s for s in sources if len(s)]
        self.batch_size, self.seed, self.window, self.prefetch = batch_size, seed, window, prefetch
        self.held_bytes = 0
        self.max_held_bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def budget_bytes(self, example_bytes: int) -> int:
        """What the stream may hold at most: a window of whole blocks (and the few examples
        carried over from the last one), the block being read into it, and the batches
        prefetched, in use and being cut."""
        largest_block = max((b - a for s in self.sources for a, b in s.blocks()), default=0)
        window = max(self.window, largest_block) + self.batch_size
        return (window + largest_block + (self.prefetch + 2) * self.batch_size) * example_bytes

    def _hold(self, arrays) -> None:
        with self._lock:
            self.held_bytes += sum(a.nbytes for a in arrays)
            self.max_held_bytes = max(self.max_held_bytes, self.held_bytes)

    def _release(self, arrays) -> None:
        with self._lock:
            self.held_bytes -= sum(a.nbytes for a in arrays)

    def _windows(self, blocks: list) -> Iterator[list]:
        """Consecutive runs of whole blocks of at most ``window`` examples (at least one block)."""
        run, n = [], 0
        for block in blocks:
            size = block[2] - block[1]
            if run and n + size > self.window:
                yield run
                run, n = [], 0
            run.append(block)
            n += size
        if run:
            yield run

    def _batches(self, epoch: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        blocks = [(s, a, b) for s in self.sources for a, b in s.blocks()]
        rng = None if epoch is None else np.random.default_rng([self.seed, epoch])
        if rng is not None:
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        windows = list(self._windows(blocks))
        carry_x = carry_y = None
        for number, run in enumerate(windows):
            n = sum(b - a for _s, a, b in run) + (0 if carry_y is None else len(carry_y))
            x = y = None
            filled = 0
            if carry_y is not None:  # the examples the last window could not make a batch of
                filled = len(carry_y)
            for source, a, b in run:
                bx, by = source.read(a, b)
                self._hold((bx, by))
                if x is None:
                    x = np.empty((n, *bx.shape[1:]), np.float32)
                    y = np.empty(n, np.int64)
                    self._hold((x, y))
                    if carry_y is not None:
                        x[:filled], y[:filled] = carry_x, carry_y
                        self._release((carry_x, carry_y))
                x[filled:filled + len(by)], y[filled:filled + len(by)] = bx, by
                filled += len(by)
                self._release((bx, by))
            order = rng.permutation(n) if rng is not None else np.arange(n)
            last = number == len(windows) - 1
            full = n if last else n - n % self.batch_size
            for start in range(0, full, self.batch_size):
                pick = order[start:start + self.batch_size]
                batch = (x[pick], y[pick])
                self._hold(batch)
                yield batch
            carry_x = carry_y = None
            if full < n:
                carry_x, carry_y = x[order[full:]], y[order[full:]]
                self._hold((carry_x, carry_y))
            self._release((x, y))

    def _prefetched(self, batches: Iterator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Read ahead on a thread; every batch is released once the consumer asks for the next."""
        if self.prefetch < 1:
            for batch in batches:
                yield batch
                self._release(batch)
            return
        ready: queue.Queue = queue.Queue(self.prefetch)
        done = object()
        failure: list[BaseException] = []
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in batches:
                    if stop.is_set():
                        return
                    ready.put(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                failure.append(exc)
            finally:
                ready.put(done)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while (batch := ready.get()) is not done:
                yield batch
                self._release(batch)
        finally:
            stop.set()
            while thread.is_alive():  # let a producer blocked on a full queue finish
                try:
                    ready.get(timeout=0.1)
                except queue.Empty:
                    pass
            thread.join()
        if failure:
            raise failure[0]

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over every example, shuffled by (seed, epoch): the same order on every run."""
        return self._prefetched(self._batches(epoch))

    def ordered(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass in the sources' order (evaluation, features)."""
        return self._prefetched(self._batches(None))
