"""Reason units and the plaintext reasons (:mod:`mpc_fl.models.reasons`): the definition every protocol meets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpc_fl.models.reasons import Reasons, Release, agreement, lr_contributions, top_reasons, toward

NAMES = ("orders", "spend", "growth", "late_rate")


def test_units_per_release_level():
    assert Release("feature").units(NAMES).names == NAMES
    none = Release("none", label="platform data").units(NAMES)
    assert none.names == ("platform data",) and none.membership.tolist() == [[1.0]] * 4
    grouped = Release("group", {"activity": ("orders", "spend")}).units(NAMES)
    assert grouped.names == ("activity", "partner data: other")
    assert grouped.membership.tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]


@pytest.mark.parametrize(
    ("release", "message"),
    [
        (lambda: Release("group", {"a": ("orders", "nope")}), "does not have: ['nope']"),
        (lambda: Release("group", {"a": ("orders",), "b": ("orders",)}), "already in group 'a'"),
        (lambda: Release("group"), "needs named groups"),
        (lambda: Release("feature", {"a": ("orders",)}), "for release 'group'"),
        (lambda: Release("all"), "choose from feature, group, none"),
    ],
)
def test_a_bad_release_is_refused_in_one_line(release, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        release().units(NAMES)


def test_groups_are_read_from_json(tmp_path):
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"activity": ["orders"]}))
    assert Release.read("group", str(f)).groups == {"activity": ("orders",)}
    f.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected"):
        Release.read("group", str(f))
    r = Release("group", {"activity": ("orders",)}, "platform")
    assert Release.from_dict(r.to_dict()) == r


def test_lr_contributions_add_up_to_the_margin_minus_the_reference_margin():
    gen = np.random.default_rng(0)
    X, w, ref = gen.normal(size=(50, 4)), gen.normal(size=4), gen.normal(size=4)
    for release in (Release("feature"), Release("none"), Release("group", {"a": ("orders", "growth")})):
        c = lr_contributions(X, w, ref, release.units(NAMES).membership)
        assert np.allclose(c.sum(1), X @ w - ref @ w)


def test_top_reasons_strongest_first_ties_to_the_first_unit():
    C = np.array([[0.1, 0.5, 0.5, -2.0], [0.0, 0.0, 0.0, 0.0]])
    units, values = top_reasons(C, 3)
    assert units.tolist() == [[1, 2, 0], [0, 1, 2]] and values[0].tolist() == [0.5, 0.5, 0.1]
    assert top_reasons(toward(C, "y0"), 1)[0].tolist() == [[3], [0]]
    assert top_reasons(C, 9)[0].shape == (2, 4)  # R above the units: every unit


def test_agreement_forgives_only_swaps_within_the_tolerance():
    names = tuple("abcd")
    ref = Reasons(names, np.array([[0, 1], [0, 1]]), np.array([[2.0, 1.0], [2.0, 1.0]]))
    near = Reasons(names, np.array([[0, 2], [0, 3]]), np.array([[2.0, 0.9995], [2.0, 0.5]]))
    assert agreement(near, ref) == 0.5  # row 0: unit 2 within 1e-3 of the weakest reason; row 1: not
    assert agreement(ref, ref) == 1.0
