"""Every bad input a bank or platform engineer can hand us gives a DataError that says what to fix."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.data.errors import DataError
from mpc_fl.data.party_table import load_party_csv


def write(tmp_path, text: str, name: str = "party.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_valid_bank_file_loads(tmp_path):
    t = load_party_csv(write(tmp_path, "id,y,a,b\n3,1,0.5,2\n1,0,1.5,3\n"), role="bank")
    assert t.ids.tolist() == [3, 1] and t.y.tolist() == [1, 0]
    assert t.feature_names == ("a", "b") and t.X.shape == (2, 2)


def test_string_ids_are_kept(tmp_path):
    t = load_party_csv(write(tmp_path, "id,a\nSME-1,0.5\nSME-2,1\n"), role="provider")
    assert t.ids.tolist() == ["SME-1", "SME-2"]


@pytest.mark.parametrize(
    ("text", "role", "message"),
    [
        ("cust,y,a\n1,1,0.5\n2,0,1\n", "bank", "no id column 'id'"),
        ("id,y,a\n1,1,0.5\n1,0,1\n", "bank", "occur more than once"),
        ("id,y,a\n1,1,0.5\n2,0,abc\n", "bank", "column 'a' is not numeric"),
        ("id,y,a\n1,1,0.5\n2,0,\n", "bank", "column 'a' has 1 missing"),
        ("id,y,a\n1,1,0.5\n2,0,inf\n", "bank", "infinite"),
        ("id,y,a\n1,2,0.5\n2,0,1\n", "bank", "must be 0 or 1"),
        ("id,y,a\n1,yes,0.5\n2,0,1\n", "bank", "must be 0 or 1"),
        ("id,y,a\n1,,0.5\n2,0,1\n", "bank", "no label"),
        ("id,y,a\n1,1,0.5\n2,1,1\n", "bank", "need both classes"),
        ("id,a\n1,0.5\n2,1\n", "bank", "no label column"),
        ("id,y,a\n1,1,0.5\n2,0,1\n", "provider", "must not hold the label"),
        ("id\n1\n2\n", "provider", "no feature columns"),
        ("id,y,a\n", "bank", "no data rows"),
        ("", "bank", "empty"),
    ],
)
def test_bad_files_raise_a_clear_data_error(tmp_path, text, role, message):
    with pytest.raises(DataError, match=message):
        load_party_csv(write(tmp_path, text), role=role)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_party_csv(tmp_path / "nope.csv", role="bank")


def test_the_real_pair_loads_with_labels_only_at_the_bank(default_credit):
    from mpc_fl.data.vertical import load_fate_pair

    bank, provider = load_fate_pair("default_credit")
    assert bank.n_rows == provider.n_rows == 30000
    assert provider.y is None and set(np.unique(bank.y)) == {0, 1}
    assert len(bank.feature_names) == 13 and len(provider.feature_names) == 10
