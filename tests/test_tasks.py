"""The synthetic learning tasks: determinism, labels recomputed independently, padding, batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derive_cells.train import tasks
from derive_cells.train.tasks import Dataset, adding, batches, distance, make_task, sentiment

SMALL = {"n_train": 200, "n_test": 60}
POLARITY = {**dict.fromkeys(tasks.POSITIVE, 1), **dict.fromkeys(tasks.NEGATIVE, -1)}


def words(ds: Dataset, n: int) -> list[str]:
    return [ds.vocab[i] for i in ds.inputs[n, : ds.lengths[n]]]


def check_padding(ds: Dataset) -> None:
    inside = np.arange(ds.inputs.shape[1]) < ds.lengths[:, None]
    assert ds.lengths.dtype == np.int64 and ds.lengths.min() >= 1
    assert ds.inputs.shape[1] == ds.lengths.max()
    if ds.tokens:
        assert ds.inputs.dtype == np.int64
        assert np.all(ds.inputs[~inside] == 0) and np.all(ds.inputs[inside] >= 2)
    else:
        assert np.all(ds.inputs[~inside] == 0)
    assert ds.targets.dtype == np.float64 and ds.targets.shape == (len(ds),)


def arrays(task: tasks.Task) -> list[np.ndarray]:
    return [getattr(ds, a) for ds in (task.train, task.test)
            for a in ("inputs", "lengths", "targets")]


@pytest.mark.parametrize("make", [
    lambda seed: sentiment(seed, **SMALL),
    lambda seed: distance(7, seed, **SMALL),
    lambda seed: adding(30, seed, **SMALL),
])
def test_deterministic_per_seed(make):
    a, b, c = make(0), make(0), make(1)
    assert all(np.array_equal(x, y) for x, y in zip(arrays(a), arrays(b), strict=True))
    assert not np.array_equal(a.train.inputs[:, :3], c.train.inputs[:, :3])
    assert not np.array_equal(a.train.inputs[:, :3], a.test.inputs[:60, :3])
    assert (len(a.train), len(a.test)) == (200, 60)


def test_vocabulary_fixed_and_word_classes_disjoint():
    classes = [tasks.NEUTRAL, tasks.POSITIVE, tasks.NEGATIVE, tasks.NEGATIONS]
    assert sum(len(c) for c in classes) == len(set().union(*classes)) == len(tasks.VOCAB) - 2
    assert tasks.VOCAB[:2] == ("<pad>", "<unk>")
    assert list(tasks.VOCAB[2:]) == sorted(tasks.VOCAB[2:])
    assert sentiment(3, 5, 5).train.vocab == distance(2, 9, 5, 5).train.vocab == tasks.VOCAB


def test_sentiment_labels_recomputed_with_negation():
    task = sentiment(5, **SMALL)
    negated = 0
    for ds in (task.train, task.test):
        check_padding(ds)
        assert 0.45 <= ds.targets.mean() <= 0.55
        assert 4 <= ds.lengths.min() and ds.lengths.max() <= 20
        for n in range(len(ds)):
            w = words(ds, n)
            score = 0
            for i, word in enumerate(w):
                if word in POLARITY:
                    flip = i > 0 and w[i - 1] in tasks.NEGATIONS
                    negated += flip
                    score += -POLARITY[word] if flip else POLARITY[word]
                elif word in tasks.NEGATIONS:
                    assert i + 1 < len(w) and w[i + 1] in POLARITY  # negations only negate
            assert 1 <= sum(x in POLARITY for x in w) <= 3
            assert score != 0 and float(score > 0) == ds.targets[n]
    assert negated > 20
    assert task.chance == max(task.test.targets.mean(), 1 - task.test.targets.mean())


@settings(max_examples=30, deadline=None)
@given(d=st.integers(0, 60), seed=st.integers(0, 2**31))
def test_distance_places_decisive_word(d, seed):
    task = distance(d, seed, n_train=40, n_test=10)
    for ds in (task.train, task.test):
        check_padding(ds)
        assert ds.info == {"distance": d, "prefix": [0, 5]}
        assert np.all((ds.lengths >= d + 1) & (ds.lengths <= d + 6))
        assert ds.targets.sum() == len(ds) // 2
        for n in range(len(ds)):
            w = words(ds, n)
            pos = ds.lengths[n] - 1 - d
            assert POLARITY[w[pos]] == (1 if ds.targets[n] else -1)
            assert all(x in tasks.NEUTRAL for i, x in enumerate(w) if i != pos)


def test_distance_arguments():
    with pytest.raises(ValueError, match=">= 0"):
        distance(-1)
    task = distance(0, n_train=20, n_test=4, prefix=(3, 3))
    assert np.all(task.train.lengths == 4)
    assert all(POLARITY[words(task.train, n)[-1]] for n in range(20))


def test_adding_targets_and_markers():
    task = adding(17, seed=2, **SMALL)
    assert task.chance == 1 / 6 and task.train.kind == "regression" and not task.train.tokens
    for ds in (task.train, task.test):
        check_padding(ds)
        assert ds.inputs.shape == (len(ds), 17, 2) and ds.inputs.dtype == np.float64
        assert np.all(ds.lengths == 17) and ds.info == {"steps": 17}
        values, marker = ds.inputs[..., 0], ds.inputs[..., 1]
        assert np.all((values >= 0) & (values < 1))
        assert set(np.unique(marker)) == {0.0, 1.0}
        assert np.all(marker[:, :8].sum(1) == 1) and np.all(marker[:, 8:].sum(1) == 1)
        np.testing.assert_allclose(ds.targets, (values * marker).sum(1), rtol=0, atol=1e-15)
    big = adding(2, seed=0, n_train=4000, n_test=1).train
    assert np.all(big.inputs[:, :, 1] == 1.0)
    assert abs(np.mean((big.targets - 1.0) ** 2) - 1 / 6) < 0.01
    with pytest.raises(ValueError, match="steps >= 2"):
        adding(1)


def test_batches_cover_every_index_once():
    shuffled = batches(103, 10, np.random.default_rng(0))
    assert [len(b) for b in shuffled] == [10] * 10 + [3]
    flat = np.concatenate(shuffled)
    assert np.array_equal(np.sort(flat), np.arange(103))
    assert not np.array_equal(flat, np.arange(103))
    ordered = batches(7, 3, None)
    assert [b.tolist() for b in ordered] == [[0, 1, 2], [3, 4, 5], [6]]
    assert batches(0, 4, None) == []
    with pytest.raises(ValueError):
        batches(5, 0, None)


def test_subset_trims_to_longest_row():
    ds = distance(2, n_train=50, n_test=5).train
    short = np.flatnonzero(ds.lengths <= 4)
    sub = ds.subset(short)
    assert len(sub) == len(short) and sub.inputs.shape[1] == sub.lengths.max() <= 4
    assert np.array_equal(sub.inputs, ds.inputs[short, : sub.inputs.shape[1]])
    assert sub.vocab is ds.vocab and sub.info == ds.info and sub.tokens
    feats = adding(6, n_train=5, n_test=2).train.subset(np.array([4, 0]))
    assert feats.inputs.shape == (2, 6, 2) and not feats.tokens


def test_make_task_dispatch_and_errors():
    assert np.array_equal(make_task("distance", seed=4, distance=3, **SMALL).train.inputs,
                          distance(3, seed=4, **SMALL).train.inputs)
    assert make_task("adding", steps=9, n_train=8, n_test=3).train.inputs.shape == (8, 9, 2)
    assert len(make_task("sentiment", n_train=11, n_test=7).test) == 7
    assert set(tasks.TASKS) == {"sentiment", "distance", "adding", "reviews"}
    for kwargs, message in [({"name": "nope"}, "unknown task"),
                            ({"name": "distance"}, "needs a distance"),
                            ({"name": "adding"}, "needs a number of steps"),
                            ({"name": "sentiment", "steps": 3}, "adding task only")]:
        with pytest.raises(ValueError, match=message):
            make_task(**kwargs)


def test_dataset_rejects_inconsistent_arrays():
    with pytest.raises(ValueError, match="lengths"):
        Dataset("x", np.zeros((2, 3), np.int64), np.array([1, 4]), np.zeros(2), "binary")
    with pytest.raises(ValueError, match="kind"):
        Dataset("x", np.zeros((1, 1), np.int64), np.array([1]), np.zeros(1), "ordinal")
