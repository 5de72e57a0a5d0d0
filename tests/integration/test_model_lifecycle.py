"""Train once, save each party's part, score a fresh file later in new processes: the same scores."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpc_fl.app.local import model_path, run_protocol_locally, score_locally
from mpc_fl.app.store import ModelPartError, load_part, save_part
from mpc_fl.protocols import REGISTRY, cases
from tests.budget import budget_s

N = 800
#: Every lifecycle case of the registry, at a size for these 800 rows (same within a family).
SIZE = {
    "lr": {"n_epochs": 2, "batch_size": 200, "min_iterations": 0},
    "gbdt": {"n_trees": 2, "max_depth": 3, "n_bins": 16},
}
SMALL = {c.name: (c.protocol, {**c.options, **SIZE[REGISTRY[c.protocol].family]}) for c in cases("lifecycle")}


def _tolerance(case: str) -> float:
    """SS scores carry fixed-point truncation noise; every other protocol scores exactly the same."""
    return 2e-3 if REGISTRY[SMALL[case][0]].uses_crypten else 1e-6


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _files(tmp: Path) -> tuple[Path, Path]:
    gen = np.random.default_rng(8)
    ids = np.arange(5000, 5000 + N)
    xb, xp = gen.normal(size=(N, 3)), gen.lognormal(size=(N, 4))
    y = ((xb[:, 0] + np.log(xp[:, 1]) + gen.normal(size=N)) > 0.3).astype(int)
    bank = _write(
        tmp / "bank.csv", ["id", "y", "a", "b", "c"], [[i, t, *r] for i, t, r in zip(ids, y, xb, strict=True)]
    )
    prov = _write(
        tmp / "provider.csv", ["id", "d", "e", "f", "g"], [[i, *r] for i, r in zip(ids, xp, strict=True)]
    )
    return bank, prov


def _subset(src: Path, dst: Path, ids: set[str], drop: str | None = None) -> Path:
    with open(src) as fh:
        rows = list(csv.reader(fh))
    keep = [k for k, name in enumerate(rows[0]) if name != drop]
    out = [[r[k] for k in keep] for r in rows if r[0] in ids or r[0] == "id"]
    return _write(dst, out[0], out[1:])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Every protocol trained once on the same files and split, each with its parts saved."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    bank, prov = _files(tmp)
    out = {}
    for protocol, (name, opts) in SMALL.items():
        rec = run_protocol_locally(
            bank, [prov], name, opts, tmp / protocol, split="stratified-public",
            keep_scores=True, save_models=tmp / protocol / "models", timeout_s=budget_s(20),
        )  # fmt: skip
        out[protocol] = rec
    return {"tmp": tmp, "bank": bank, "provider": prov, "runs": out}


@pytest.mark.parametrize("protocol", list(SMALL))
def test_a_saved_model_scores_a_fresh_file_like_the_model_in_memory(trained, protocol):
    rec = trained["runs"][protocol]
    bank_report = rec.parties["bank"]
    want = dict(zip(bank_report.test_ids, bank_report.scores, strict=True))
    tmp = trained["tmp"] / f"score-{protocol}"
    tmp.mkdir()
    ids = set(want)
    new_bank = _subset(trained["bank"], tmp / "applications.csv", ids, drop="y")  # a new file: no labels
    new_prov = _subset(trained["provider"], tmp / "platform.csv", ids | {"999999"})
    record = score_locally(
        new_bank, [new_prov], trained["tmp"] / protocol / "models", tmp / "run", timeout_s=budget_s(10)
    )
    with open(record.scores_file) as fh:
        got = {r["id"]: float(r["score"]) for r in csv.DictReader(fh)}
    assert set(got) == ids
    worst = max(abs(got[i] - want[i]) for i in ids)
    assert worst <= _tolerance(protocol), worst
    assert record.parties["provider"].scores is None  # only the bank learns scores


def _score_party(
    trained: dict, role: str, model: Path, data: Path, *extra: str
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mpc_fl.app.cli", "score-party", "--role", role, "--model", str(model),
           "--data", str(data), "--federation", str(trained["tmp"] / "nowhere.toml"), "--key", "none", *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_a_part_of_another_role_is_refused_in_one_line(trained):
    models = trained["tmp"] / "ss_lr" / "models"
    proc = _score_party(trained, "bank", model_path(models, "provider"), trained["bank"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is 'provider''s part of the model, not 'bank''s" in proc.stderr


def test_a_part_saved_by_another_protocol_version_is_refused(trained, tmp_path):
    part = load_part(model_path(trained["tmp"] / "ss_gbdt" / "models", "bank"))
    part.protocol_version += 1
    stale = save_part(part, tmp_path / "bank.model.npz")
    proc = _score_party(trained, "bank", stale, trained["bank"])
    assert proc.returncode == 2 and "model version" in proc.stderr and "retrain" in proc.stderr


def test_parts_of_two_different_models_do_not_score_together(trained, tmp_path):
    """Same protocol, two trainings: the bank's part of one and the provider's of the other."""
    rec = run_protocol_locally(
        trained["bank"], [trained["provider"]], *SMALL["ss_lr"], tmp_path / "again",
        split="stratified-public", save_models=tmp_path / "again" / "models",
    )  # fmt: skip
    assert rec.models
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for role, source in (
        ("bank", trained["tmp"] / "ss_lr" / "models"),
        ("provider", tmp_path / "again" / "models"),
    ):
        model_path(mixed, role).write_bytes(model_path(source, role).read_bytes())
    with pytest.raises(Exception, match=r"disagree on model"):
        score_locally(trained["bank"], [trained["provider"]], mixed, tmp_path / "run")


def test_an_oblivious_part_holds_no_split_only_shares_of_the_routing(trained):
    """Each party's saved oblivious model: no owners, no splits; its routing vectors are uniform shares."""
    models = trained["tmp"] / "ss_gbdt_oblivious" / "models"
    for role in ("bank", "provider"):
        part = load_part(model_path(models, role))
        meta = part.meta["protocol"]
        assert meta["oblivious"] and meta["owners"] == [] and meta["splits"] == []
        routes = [v for k, v in part.arrays.items() if "route_share_" in k]
        assert len(routes) == meta["n_routes"] == 3  # the bank's, the provider's, "no split"
        # shares of 0/1 values: uniform ring elements, the top bit set about half the time
        bits = np.concatenate([r.ravel() for r in routes]) < 0
        assert bits.size > 500 and abs(bits.mean() - 0.5) < 0.1, role


def test_parts_are_plain_arrays_and_never_hold_the_other_partys_data(trained, tmp_path):
    bank_values = np.loadtxt(trained["bank"], delimiter=",", skiprows=1)[:, 2:]
    prov_values = np.loadtxt(trained["provider"], delimiter=",", skiprows=1)[:, 1:]
    for protocol in SMALL:
        models = trained["tmp"] / protocol / "models"
        for role, others in (("bank", prov_values), ("provider", bank_values)):
            path = model_path(models, role)
            with np.load(path, allow_pickle=False) as z:  # would raise on any pickled object
                arrays = {k: z[k] for k in z.files}
            assert all(a.dtype != object for a in arrays.values())
            blob = path.read_bytes()
            if protocol.startswith("plain") and role == "bank":
                continue  # the plaintext baseline's bank saw every raw feature: it is the no-privacy ceiling
            for v in others[:50].ravel():
                assert np.float64(v).tobytes() not in blob, (protocol, role)
            meta = json.loads(str(arrays["__meta__"]))
            assert meta["role"] == role and "y" not in meta["feature_names"]
    crafted = tmp_path / "evil.model.npz"
    np.savez(crafted, __meta__=np.array('{"part_format": 1}'), payload=np.array([object()], dtype=object))
    with pytest.raises(ModelPartError):
        load_part(crafted)
