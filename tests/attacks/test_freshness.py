"""The freshness statistics on synthetic data: uniform data passes, a repeated or nearby pad is flagged,
and the thresholds are tight (at a large false-alarm rate they do fire on uniform data about that often)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.attacks import freshness

RING_LOW, RING_HIGH = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def _uniform(gen: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return gen.integers(RING_LOW, RING_HIGH, size=shape, dtype=np.int64, endpoint=True)


def test_uniform_words_and_bits_pass():
    gen = np.random.default_rng(1)
    ring = list(_uniform(gen, (200, 500)))  # 100k words: near the most nearest_words can test at ALPHA
    bits = list(gen.random((200, 2000)) < 0.5)
    found = freshness.report(ring, bits)
    assert [f.name for f in found] == ["nearest words", "same position", "xor agreement"]
    assert not freshness.flagged(found), freshness.describe(found)


@pytest.mark.parametrize("offset", [0, 1, -3, 2**64 - 2])
def test_a_repeated_or_offset_word_is_flagged(offset):
    """Anywhere in the view (here: another vector, another position), and across the wrap at 2^64."""
    gen = np.random.default_rng(2)
    ring = list(_uniform(gen, (100, 500)))
    moved = ring[3][7:8].view(np.uint64) + np.uint64(offset % 2**64)  # an array: wraps silently
    ring[70][123] = moved.view(np.int64)[0]
    found = freshness.nearest_words(ring)
    assert found.flagged, found
    assert found.value == min(offset % 2**64, -offset % 2**64)


def test_a_pad_reused_at_the_same_position_is_flagged_though_no_word_repeats():
    """Two openings ``x - b`` and ``x' - b`` differ by ``x - x'`` (fixed-point plaintexts): far too
    far apart for the all-words statistic, at once for the same-position one."""
    gen = np.random.default_rng(3)
    ring = list(_uniform(gen, (100, 500)))
    pad = _uniform(gen, (500,))
    plain = np.round(gen.normal(size=(2, 500)) * 0.3 * 2**16).astype(np.int64)  # residuals at 16 bits
    ring[10], ring[60] = plain[0] - pad, plain[1] - pad  # int64 arithmetic wraps like the ring
    assert not freshness.nearest_words(ring).flagged
    found = freshness.same_position(ring)
    assert found.flagged and "vectors 10 and 60" in found.where, found


def test_a_reused_bit_pad_is_flagged_both_ways():
    """Masked bits ``ind ^ c`` and ``ind' ^ c`` agree wherever the indicators do; a complemented
    pad disagrees there: both are far from half."""
    gen = np.random.default_rng(4)
    bits = list(gen.random((50, 600)) < 0.5)
    ind = gen.random(600) < 0.4
    near = ind ^ (gen.random(600) < 0.1)  # indicators of two nearby nodes: mostly equal
    c = gen.random(600) < 0.5
    for second in (near ^ c, ~(near ^ c)):
        found = freshness.xor_agreement([*bits, ind ^ c, second])
        assert found.flagged, found
    assert not freshness.xor_agreement([*bits, ind ^ c, near ^ (gen.random(600) < 0.5)]).flagged


def test_thresholds_are_tight_at_a_large_false_alarm_rate():
    """At alpha = 0.5 the union bound is nearly exact: about 1 - e^-0.5 = 39% of uniform views raise
    an alarm (seeded: the count is fixed)."""
    gen = np.random.default_rng(5)
    trials = 60
    alarms = {"nearest": 0, "same": 0, "xor": 0}
    for _ in range(trials):
        ring = list(_uniform(gen, (20, 200)))
        alarms["nearest"] += freshness.nearest_words(ring, alpha=0.5).flagged
        alarms["same"] += freshness.same_position(ring, alpha=0.5).flagged
        alarms["xor"] += freshness.xor_agreement(list(gen.random((20, 400)) < 0.5), alpha=0.5).flagged
    assert 0.15 < alarms["nearest"] / trials < 0.6, alarms
    assert 0.15 < alarms["same"] / trials < 0.6, alarms
    assert alarms["xor"] / trials < 0.6, alarms  # the binomial tail is discrete and two-sided: below


def test_too_many_words_for_the_false_alarm_rate_are_refused():
    with pytest.raises(ValueError, match="test fewer"):
        freshness.gap_threshold(2**40)
    assert freshness.gap_threshold(1) == int((1e-9 * 2.0**64 - 1) / 2)
