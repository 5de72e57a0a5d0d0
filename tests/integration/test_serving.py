"""The scoring service: links stay open, single applications are scored by id, bad cases are per query."""

from __future__ import annotations

import csv
import json
import sqlite3
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mpc_fl.app.local import LocalService, run_protocol_locally
from mpc_fl.app.serving import DecoySettings, EndpointSettings, serve_http
from tests.budget import budget_s

N = 600


def _csv(path: Path, header: list[str], rows) -> Path:  # noqa: ANN001
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _train(tmp: Path, protocol: str, seed: int, opts: dict, **release: str) -> tuple[Path, Path, Path, dict]:
    gen = np.random.default_rng(seed)
    ids = np.arange(100, 100 + N)
    xb, xp = gen.normal(size=(N, 2)), gen.normal(size=(N, 3))
    y = ((xb[:, 0] + xp[:, 0] + gen.normal(size=N)) > 0).astype(int)
    bank = _csv(
        tmp / "bank.csv", ["id", "y", "a", "b"], [[i, t, *r] for i, t, r in zip(ids, y, xb, strict=True)]
    )
    prov = _csv(tmp / "provider.csv", ["id", "c", "d", "e"], [[i, *r] for i, r in zip(ids, xp, strict=True)])
    rec = run_protocol_locally(
        bank, [prov], protocol, opts, tmp / "train", split="stratified-public", keep_scores=True,
        save_models=tmp / "models", timeout_s=budget_s(20), **release,
    )  # fmt: skip
    want = dict(zip(rec.parties["bank"].test_ids, rec.parties["bank"].scores, strict=True))
    return bank, prov, tmp / "models", want


@pytest.fixture
def lr_service(tmp_path):
    bank, prov, models, want = _train(tmp_path, "ss_lr", 1, {"n_epochs": 1, "batch_size": 128})
    d = LocalService(models, bank, prov, tmp_path)
    yield d, want, bank, prov
    d.stop()


def test_single_applications_score_like_the_trained_model_and_bad_ids_fail_alone(lr_service):
    d, want, _, _ = lr_service
    some = list(want)[:20]
    for i in some:
        (r,) = d.bank.score(i)
        assert r.error is None and abs(r.score - want[i]) < 2e-3
    (bad,) = d.bank.score("no-such-sme")
    assert "the bank cannot score this id" in bad.error
    batch = d.bank.score([some[0], "no-such-sme", some[1]])
    assert batch[0].score is not None and batch[1].error and batch[2].score is not None
    (again,) = d.bank.score(some[2])  # the service keeps running
    assert again.error is None


def test_a_missing_feature_at_the_provider_is_an_error_for_that_id_only(lr_service):
    d, want, _, _ = lr_service
    victim, other = list(want)[:2]
    with sqlite3.connect(d.provider_db) as con:
        con.execute('UPDATE features SET "d" = NULL WHERE "id" = ?', (victim,))
    (r,) = d.bank.score(victim)
    assert r.error == "the provider cannot score this id"  # not which of the provider's features is missing
    (ok,) = d.bank.score(other)
    assert ok.error is None


def test_a_provider_that_goes_away_is_reported_and_the_service_recovers(lr_service, tmp_path):
    d, want, _, _ = lr_service
    i = next(iter(want))
    d.kill("provider")
    (r,) = d.bank.score(i)
    assert r.error and "provider unavailable" in r.error and "provider" in r.error
    d.start("provider")
    end = time.monotonic() + 60
    while not d.bank.ready and time.monotonic() < end:
        time.sleep(0.1)
    (back,) = d.bank.score(i)
    assert back.error is None and abs(back.score - want[i]) < 2e-3


def test_a_provider_restarted_with_another_model_is_refused_by_name(lr_service, tmp_path):
    d, want, bank, prov = lr_service
    other = tmp_path / "other"
    other.mkdir()
    _, _, other_models, _ = _train(other, "ss_lr", 1, {"n_epochs": 1, "batch_size": 64})
    d.kill("provider")
    d.start("provider", other_models)
    end = time.monotonic() + 60
    while "disagree on model" not in (d.bank.last_error or "") and time.monotonic() < end:
        time.sleep(0.2)
    (r,) = d.bank.score(next(iter(want)))
    assert r.error and "disagree on model" in r.error, r.error
    assert not d.bank.ready


def test_http_endpoint_with_its_token_and_the_default_decoys(tmp_path):
    bank, prov, models, want = _train(tmp_path, "ss_gbdt", 2, {"n_trees": 2, "max_depth": 3, "n_bins": 16})
    d = LocalService(models, bank, prov, tmp_path)
    token = "s" * 32
    try:
        assert d.bank.anonymity is not None and d.bank.anonymity.k == DecoySettings().k
        server = serve_http(d.bank, EndpointSettings(port=0, token=token))
        auth = {"Authorization": f"Bearer {token}"}
        health = json.loads(
            urllib.request.urlopen(urllib.request.Request(f"{server.url}/health", headers=auth)).read()
        )
        assert health["ready"] and health["protocol"] == "ss_gbdt"
        ids = list(want)[:5]
        req = urllib.request.Request(
            f"{server.url}/score",
            data=json.dumps({"ids": [*ids, "nope"]}).encode(),
            method="POST",
            headers=auth,
        )
        body = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert set(body["scores"]) == set(ids) and "nope" in body["errors"] and body["warnings"] == {}
        for i in ids:
            assert abs(body["scores"][i] - want[i]) < 2e-3
        # the bank's features in the request (step 6 of issue 26): as in its file, the same score;
        # others, the score of those (the provider still reads its own by id)
        row = {str(r["id"]): r for r in csv.DictReader(bank.read_text().splitlines())}[str(ids[0])]

        def with_data(a: float) -> float:
            data = {"applications": {str(ids[0]): {"a": a, "b": float(row["b"])}}}
            req = urllib.request.Request(
                f"{server.url}/score", json.dumps(data).encode(), auth, method="POST"
            )
            return json.loads(urllib.request.urlopen(req, timeout=60).read())["scores"][str(ids[0])]

        assert abs(with_data(float(row["a"])) - want[ids[0]]) < 2e-3
        assert max(abs(with_data(a) - want[ids[0]]) for a in (-5.0, 5.0)) > 1e-2

        # the drift monitor: the applications scored (5, 3 with data, 5 more), not their decoys
        def stability() -> dict:
            req = urllib.request.Request(f"{server.url}/stability", headers=auth)
            return json.loads(urllib.request.urlopen(req).read())

        assert stability()["rows"] == 8 and stability()["features"] == {}  # too few rows for an index yet
        more = json.dumps({"ids": list(want)[5:10]}).encode()
        urllib.request.urlopen(
            urllib.request.Request(f"{server.url}/score", more, auth, method="POST"), timeout=60
        )
        stable = stability()
        assert stable["rows"] == 13 and set(stable["features"]) == {"a", "b"} and stable["score"] is not None
        server.shutdown()
    finally:
        d.stop()


def test_each_application_gets_the_reasons_batch_scoring_gives_it(tmp_path):
    """Reasons ranked for the applicant's own row among its decoys (the bank's secret pick) are the
    ones batch scoring ranks for that row; the provider's features appear only as its groups."""
    from mpc_fl.app.local import score_locally

    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"activity": ["c", "d"]}))
    bank, prov, models, want = _train(
        tmp_path, "ss_lr", 3, {"n_epochs": 1, "batch_size": 128}, release="group", groups=str(groups)
    )
    batch = score_locally(bank, [prov], models, tmp_path / "batch", reasons=3, timeout_s=budget_s(60))
    expected = dict(zip(batch.parties["bank"].ids, batch.parties["bank"].reasons, strict=True))
    d = LocalService(models, bank, prov, tmp_path / "service", reasons=3)
    try:
        ids = list(want)[:6]
        for i, r in zip(ids, d.bank.score(ids), strict=True):
            assert r.error is None
            got, ref = [n for n, _ in r.reasons], [n for n, _ in expected[i]]
            assert got == ref, (i, r.reasons, expected[i])
            assert np.allclose([v for _, v in r.reasons], [v for _, v in expected[i]], atol=1e-3)
            assert set(got) <= {"a", "b", "activity", "partner data: other"}
    finally:
        d.stop()
