"""Shuffled batches in flat memory: every example once per epoch, the same order for the same
seed, and never more held than the stream's budget, by the stream's own accounting."""

from __future__ import annotations

import numpy as np
import pytest

from ferqueue.data.stream import BLOCK, ArrayExamples, Stream


def _numbered(n: int, offset: int = 0, side: int = 4) -> ArrayExamples:
    """Images whose first pixel holds their number, so that a batch says which examples it holds."""
    x = np.zeros((n, side, side, 3), np.float32)
    x[:, 0, 0, 0] = np.arange(offset, offset + n)
    return ArrayExamples(x, np.arange(offset, offset + n) % 7)


def _ids(stream: Stream, epoch: int | None) -> np.ndarray:
    batches = stream.ordered() if epoch is None else stream.epoch(epoch)
    return np.concatenate([x[:, 0, 0, 0].astype(np.int64) for x, _y in batches])


def test_an_epoch_gives_every_example_of_every_source_once_in_a_seeded_order():
    stream = Stream([_numbered(5000), _numbered(3000, offset=5000)], batch_size=64, seed=3)
    first, again, second = _ids(stream, 0), _ids(stream, 0), _ids(stream, 1)
    np.testing.assert_array_equal(np.sort(first), np.arange(8000))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(8000))
    np.testing.assert_array_equal(_ids(stream, None), np.arange(8000))
    # the two sources are mixed within batches, not read one after the other
    halves = first[:4000] >= 5000
    assert 0.2 < halves.mean() < 0.6


@pytest.mark.parametrize("n", [2 * BLOCK, 20 * BLOCK])
def test_the_stream_holds_no_more_than_its_budget_whatever_the_number_of_examples(n):
    side = 16
    example_bytes = side * side * 3 * 4 + 8
    stream = Stream([_numbered(n, side=side)], batch_size=32, seed=0)
    seen = sum(len(y) for _x, y in stream.epoch(0))
    assert seen == n
    assert 0 < stream.max_held_bytes <= stream.budget_bytes(example_bytes)
    assert stream.budget_bytes(example_bytes) < 12 * BLOCK * example_bytes, "the budget does not grow with n"
    assert stream.held_bytes == 0, "every batch was released"


def test_a_consumer_that_stops_early_stops_the_reader():
    stream = Stream([_numbered(10 * BLOCK)], batch_size=16, seed=0)
    batches = stream.epoch(0)
    next(batches)
    batches.close()  # the training step raised, say: the reading thread must not hang
    assert sum(len(y) for _x, y in stream.epoch(1)) == 10 * BLOCK
