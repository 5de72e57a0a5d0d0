"""Scorecard points: the base score at the base odds, pdo points per doubling, parsing and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpc_fl.models.scorecard import Scorecard


def test_base_odds_give_the_base_score_and_pdo_points_double_the_odds():
    card = Scorecard(pdo=20, base_score=600, base_odds=50)
    assert card.points(np.array([math.log(50)]))[0] == pytest.approx(600)
    assert card.points(np.array([math.log(100)]))[0] == pytest.approx(620)
    p = 100 / 101  # odds 100
    assert card.points_of_probability(np.array([p]))[0] == pytest.approx(620)


def test_higher_y0_rewards_the_other_outcome():
    card = Scorecard(higher="y0")
    assert card.points(np.array([-math.log(50)]))[0] == pytest.approx(600)  # odds of y = 0 are 50


def test_parse_and_refusals():
    assert Scorecard.parse("pdo=40,base=500,odds=20,higher=y0") == Scorecard(40, 500, 20, "y0")
    assert Scorecard.parse("") == Scorecard()
    for bad, named in (
        ("pdo=0", "pdo"),
        ("odds=-1", "odds"),
        ("higher=yes", "higher"),
        ("pts=3", "expected"),
    ):
        with pytest.raises(ValueError, match=named):
            Scorecard.parse(bad)
