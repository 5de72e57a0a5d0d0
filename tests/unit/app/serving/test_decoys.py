"""Anonymity sets: a partition of the bank's customers, fixed once built, keyed, and kept on disk."""

from __future__ import annotations

import stat

import pytest

from mpc_fl.app.serving.decoys import AnonymitySets, DecoyError

POPULATION = [f"sme-{i}" for i in range(1003)]


def test_the_sets_partition_the_customers_into_groups_of_k_plus_1_to_2k_plus_1():
    sets = AnonymitySets.build(9, POPULATION)
    members = [i for s in sets.sets for i in s]
    assert sorted(members) == sorted(POPULATION)  # every customer, each once
    assert all(10 <= len(s) <= 19 for s in sets.sets)
    assert sum(len(s) > 10 for s in sets.sets) == 1  # the remainder joins one set only


def test_every_member_of_a_set_sends_the_same_query():
    sets = AnonymitySets.build(4, POPULATION)
    for s in sets.sets[:20]:
        queries = {tuple(sets.query([member])) for member in s}
        assert queries == {tuple(s)}
    a, b = sets.sets[0][0], sets.sets[3][1]
    assert sets.query([a, b]) == sets.query([b, a]) == sets.sets[0] + sets.sets[3]


def test_the_grouping_depends_on_the_bank_key():
    one, two = AnonymitySets.build(4, POPULATION), AnonymitySets.build(4, POPULATION)
    assert one.key != two.key and len(one.key) == 32
    assert {frozenset(s) for s in one.sets} != {frozenset(s) for s in two.sets}
    again = AnonymitySets.build(4, POPULATION, key=one.key)
    assert again.sets == one.sets


def test_the_sets_are_kept_and_never_changed_and_new_customers_wait_for_a_full_set(tmp_path):
    path = tmp_path / "bank.anonymity-sets.json"
    first = AnonymitySets.open(path, 4, POPULATION)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the key
    new = [f"new-{i}" for i in range(7)]
    second = AnonymitySets.open(path, 4, [*POPULATION, *new])
    assert second.sets[: len(first.sets)] == first.sets  # old sets untouched
    assert len(second.sets) == len(first.sets) + 1  # 7 new: one set of 5, two wait
    assert sum(map(second.covers, new)) == 5
    third = AnonymitySets.open(path, 4, [*POPULATION, *new])
    assert third.sets == second.sets


def test_another_k_or_a_damaged_file_is_refused(tmp_path):
    path = tmp_path / "sets.json"
    AnonymitySets.open(path, 4, POPULATION)
    with pytest.raises(DecoyError, match="keep --decoys 4"):
        AnonymitySets.open(path, 9, POPULATION)
    path.write_text("{not json")
    with pytest.raises(DecoyError, match="cannot read"):
        AnonymitySets.open(path, 4, POPULATION)


def test_too_few_customers_for_k_decoys_is_refused():
    with pytest.raises(DecoyError, match="at least 10"):
        AnonymitySets.build(9, POPULATION[:9])
