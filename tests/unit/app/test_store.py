"""Saved model parts: private files that cannot be redirected, and refused in one line when altered or malformed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from mpc_fl.app.store import (
    DIGEST,
    META,
    PART_FORMAT,
    ModelPart,
    ModelPartError,
    content_digest,
    load_part,
    save_part,
)


def _part() -> ModelPart:
    return ModelPart(
        role="bank",
        protocol="ss_lr",
        protocol_version=1,
        params={"learning_rate": 0.5, "n_epochs": 2},
        parties=["bank", "provider"],
        fingerprint="ab" * 32,
        feature_names=["a", "b"],
        meta={"protocol": {"n_features": 2}, "scaler": {"kind": "robust"}},
        arrays={"protocol.w_share": np.arange(6, dtype=np.int64).reshape(2, 3), "scaler.center": np.ones(2)},
    )


def _rewrite(path: Path, edit_header=None, edit_arrays=None, keep_digest: bool = True) -> None:  # noqa: ANN001
    """Rewrite a saved part's header and arrays as an editor would (the digest field kept, or recomputed)."""
    with np.load(path, allow_pickle=False) as z:
        content = {k: z[k] for k in z.files}
    header = json.loads(str(content.pop(META)))
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(content)
    if not keep_digest:
        header[DIGEST] = content_digest(header, content)
    np.savez(path, **{META: np.array(json.dumps(header))}, **content)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------ writing


def test_a_symlink_planted_at_the_old_temporary_path_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    target = tmp_path / "bank.model.npz"
    (tmp_path / "bank.model.tmp.npz").symlink_to(victim)  # the name the writer used to reuse
    save_part(_part(), target)
    assert victim.read_text() == "do not touch"
    assert load_part(target).arrays["protocol.w_share"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert _mode(target) == 0o600 and not target.is_symlink()


def test_a_symlink_at_the_part_itself_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    target = tmp_path / "bank.model.npz"
    target.symlink_to(victim)
    save_part(_part(), target)
    assert victim.read_text() == "do not touch"
    assert not target.is_symlink() and _mode(target) == 0o600


def test_the_part_is_0600_even_over_leftover_world_readable_files(tmp_path):
    target = tmp_path / "bank.model.npz"
    for leftover in (tmp_path / "bank.model.tmp.npz", target):
        leftover.write_bytes(b"old")
        leftover.chmod(0o644)
    old_umask = os.umask(0)  # the most permissive umask: the mode must not depend on it
    try:
        save_part(_part(), target)
    finally:
        os.umask(old_umask)
    assert _mode(target) == 0o600
    assert load_part(target).role == "bank"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left


def test_a_folder_that_cannot_be_written_fails_in_one_line(tmp_path, monkeypatch):
    import mpc_fl.app.store as store

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - as a read-only folder would (root ignores modes)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store.os, "open", refuse)
    with pytest.raises(ModelPartError) as err:
        save_part(_part(), tmp_path / "bank.model.npz")
    assert str(err.value) == f"{tmp_path / 'bank.model.npz'}: cannot write the model part (Permission denied)"


# ------------------------------------------------------------------ tampering


@pytest.mark.parametrize(
    ("what", "edit_header", "edit_arrays"),
    [
        ("an array value", None, lambda a: a["protocol.w_share"].__setitem__((0, 0), 7)),
        ("an added array", None, lambda a: a.__setitem__("protocol.extra", np.zeros(1))),
        ("a removed array", None, lambda a: a.pop("scaler.center")),
        ("a hyperparameter", lambda h: h["params"].__setitem__("learning_rate", 5.0), None),
        ("the protocol's metadata", lambda h: h["meta"]["protocol"].__setitem__("n_features", 3), None),
        ("the feature names", lambda h: h["feature_names"].reverse(), None),
    ],
)
def test_a_part_edited_after_saving_is_refused_though_it_keeps_its_fingerprint(
    tmp_path, what, edit_header, edit_arrays
):
    path = save_part(_part(), tmp_path / "bank.model.npz")
    _rewrite(path, edit_header, edit_arrays)
    with np.load(path) as z:
        assert json.loads(str(z[META]))["fingerprint"] == "ab" * 32  # the fingerprint field is intact
    with pytest.raises(ModelPartError) as err:
        load_part(path)
    line = str(err.value)
    assert line == f"{path}: the model part was altered after it was saved: its content does not match its digest (restore the file or retrain)", what  # fmt: skip


def test_an_untouched_part_loads_back_exactly(tmp_path):
    part = _part()
    got = load_part(save_part(part, tmp_path / "bank.model.npz"), role="bank")
    assert (got.params, got.parties, got.fingerprint, got.meta) == (part.params, part.parties, part.fingerprint, part.meta)  # fmt: skip
    assert {k: v.tolist() for k, v in got.arrays.items()} == {k: v.tolist() for k, v in part.arrays.items()}


def test_a_part_of_the_previous_format_is_refused_with_the_way_out(tmp_path):
    path = save_part(_part(), tmp_path / "bank.model.npz")
    _rewrite(path, lambda h: (h.__setitem__("part_format", 1), h.pop(DIGEST)))
    with pytest.raises(ModelPartError, match=rf"format 1; this mpc_fl reads format {PART_FORMAT} \(retrain"):
        load_part(path)


# ------------------------------------------------------------------ malformed files


def _malformed_cases() -> list[tuple[str, object, str]]:
    return [
        ("role missing", lambda h: h.pop("role"), "its header has no 'role'"),
        ("role a number", lambda h: h.__setitem__("role", 3), "'role' is int 3, expected a string"),
        (
            "version a string",
            lambda h: h.__setitem__("protocol_version", "1"),
            "'protocol_version' is str '1', expected an integer",
        ),  # fmt: skip
        (
            "version a boolean",
            lambda h: h.__setitem__("protocol_version", True),
            "'protocol_version' is bool True, expected an integer",
        ),  # fmt: skip
        ("params a list", lambda h: h.__setitem__("params", [1]), "'params' is list [1], expected an object"),
        (
            "parties of numbers",
            lambda h: h.__setitem__("parties", [0, 1]),
            "'parties' must be a list of strings",
        ),
        (
            "short fingerprint",
            lambda h: h.__setitem__("fingerprint", "ab"),
            "'fingerprint' is not a SHA-256 hex digest",
        ),  # fmt: skip
        ("meta missing", lambda h: h.pop("meta"), "its header has no 'meta'"),
    ]


@pytest.mark.parametrize(
    ("what", "edit", "message"), _malformed_cases(), ids=[c[0] for c in _malformed_cases()]
)
def test_a_malformed_header_is_refused_naming_the_file_and_the_field(tmp_path, what, edit, message):
    """Even with a digest that matches (a writer that recomputed it), bad fields never reach a traceback."""
    path = save_part(_part(), tmp_path / "bank.model.npz")
    _rewrite(path, edit, keep_digest=False)
    with pytest.raises(ModelPartError) as err:
        load_part(path)
    assert str(err.value) == f"{path}: malformed model part: {message}", what


def _write_raw(path: Path, doc: object) -> Path:
    np.savez(path, **{META: np.asarray(doc)}, w=np.zeros(2))
    return path


@pytest.mark.parametrize(
    ("what", "make", "message"),
    [
        (
            "header not JSON",
            lambda p: _write_raw(p, "{not json"),
            "malformed model part: its header is not valid JSON",
        ),
        (
            "header a list",
            lambda p: _write_raw(p, "[1, 2]"),
            "malformed model part: its header is not a JSON object",
        ),
        (
            "header an array",
            lambda p: _write_raw(p, np.zeros(3)),
            "malformed model part: '__meta__' is not one JSON string",
        ),  # fmt: skip
        (
            "no header",
            lambda p: (np.savez(p, w=np.zeros(2)), p)[1],
            "not a model part written by mpc_fl (it has no '__meta__' header)",
        ),  # fmt: skip
        (
            "empty file",
            lambda p: (p.write_bytes(b""), p)[1],
            "not a model part written by mpc_fl (No data left in file)",
        ),  # fmt: skip
        (
            "a bare .npy",
            lambda p: (np.save(open(p, "wb"), np.zeros(2)), p)[1],
            "not a model part written by mpc_fl (one array, not an archive)",
        ),  # fmt: skip
    ],
)
def test_a_file_that_is_not_a_well_formed_part_is_refused_in_one_line(tmp_path, what, make, message):
    path = make(tmp_path / "bank.model.npz")
    with pytest.raises(ModelPartError) as err:
        load_part(path)
    assert str(err.value).startswith(f"{path}: {message}"), (what, str(err.value))
    assert "\n" not in str(err.value)


def test_a_truncated_or_corrupted_archive_is_refused_in_one_line(tmp_path):
    path = save_part(_part(), tmp_path / "bank.model.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ModelPartError, match=r"bank.model.npz: not a model part written by mpc_fl \(File is not a zip"
    ):
        load_part(path)
    path = save_part(_part(), tmp_path / "bank.model.npz")
    data = bytearray(path.read_bytes())
    at = bytes(data).index(
        np.arange(6, dtype=np.int64).tobytes()
    )  # stored uncompressed: flip one of its bytes
    data[at] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(
        ModelPartError, match=r"bank.model.npz: not a model part written by mpc_fl \(Bad CRC-32"
    ):
        load_part(path)
