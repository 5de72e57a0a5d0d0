"""One typed job per party: built and validated once, handed to a child as a file, never as argv."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mpc_fl.app.cli import _train_job, build_parser
from mpc_fl.app.jobs import DealerJob, JobError, Links, ScoreJob, TrainJob, read_job, write_job

LINKS = Links(federation="federation.toml", key="keys/bank.key", connect_timeout_s=30.0)


def _train(**kw: object) -> TrainJob:
    fields = {
        "role": "bank",
        "data": "bank.csv",
        "protocol": "ss_gbdt",
        "options": {"n_trees": 3},
        "links": LINKS,
    }
    return TrainJob(**{**fields, **kw})  # type: ignore[arg-type]


def test_a_job_file_round_trips_and_is_private(tmp_path: Path) -> None:
    for job in (
        _train().validate(),
        ScoreJob("provider", "p.csv", "m.npz", LINKS),
        DealerJob(LINKS, forever=True),
    ):
        path = write_job(job, tmp_path / f"{job.kind}.job.json")
        assert read_job(path) == job
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it names the party's key file


def test_the_flags_of_mpc_fl_party_build_the_same_job_as_a_local_run() -> None:
    argv = ["party", "--role", "bank", "--data", "bank.csv", "--federation", "federation.toml",
            "--key", "keys/bank.key", "--connect-timeout", "30", "--protocol", "ss_gbdt", "--param", "n_trees=3"]  # fmt: skip
    assert _train_job(build_parser().parse_args(argv)).validate() == _train().validate()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"options": {"n_bins": 500}}, r"n_bins must be in 2\.\.127, got 500"),
        ({"options": {"oblivious": True, "mask": "generic"}}, "cannot be combined"),
        ({"align": "magic"}, "--align 'magic'"),
        ({"split": "alphabetical"}, "--split 'alphabetical'"),
        ({"role": "provider", "split_key": "k"}, "the bank's secret"),
        ({"links": Links("f", "k", connect_timeout_s=0)}, "connect timeout"),
    ],
)
def test_a_bad_job_is_refused_in_one_line(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        _train(**change).validate()
    assert "\n" not in str(err.value)


def test_a_job_file_is_validated_where_it_is_read(tmp_path: Path) -> None:
    path = write_job(_train(), tmp_path / "bank.job.json")
    doc = json.loads(path.read_text())
    doc["job"]["options"] = {"n_bins": 500}  # a file edited after it was written
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="n_bins"):
        read_job(path)
    path.write_text("{not json")
    with pytest.raises(JobError, match="not an mpc-fl job file"):
        read_job(path)


def test_party_with_a_bad_job_file_exits_2_in_one_line_before_connecting(tmp_path: Path) -> None:
    doc = {
        "format": 1,
        "kind": "train",
        "job": {**_train(options={"n_bins": 500}).__dict__, "links": LINKS.__dict__},
    }
    path = tmp_path / "bank.job.json"
    path.write_text(json.dumps(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "mpc_fl.app.cli", "party", "--job", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "n_bins must be in 2..127" in proc.stderr
