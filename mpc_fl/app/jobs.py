"""One typed job per party, built and validated once, and the typed reports a run gives back.

Why: a party's options used to make a round trip through argv (parsed and checked three times;
ranges only inside ``fit``, after TLS, PSI and the split). Now the process that reads a command
line or a job file builds a :class:`TrainJob` or :class:`ScoreJob` and validates it before anything
connects; a local run hands each child its job as a JSON file (``mpc-fl party --job FILE``), and
``mpc-fl party --data ... --param ...`` on a real host builds the same job. :class:`PartyReport`,
:class:`ScoreReport` and :class:`RunRecord` are the schema that benchmarks and experiments read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mpc_fl.data.split import SPLITS
from mpc_fl.psi.align import ALIGNMENTS
from mpc_fl.runtime.roles import BANK

JOB_FORMAT = 1
#: which features a model uses: every party's, or the providers' only (a prospect model: the bank
#: gives labels, so that customers of the providers who are not the bank's can be scored)
FEATURES = ("all", "providers")


#: most reason codes an application may get (adverse-action notices give up to four or five)
MAX_REASONS = 10


class JobError(ValueError):
    """A job that cannot run as given (one line naming the field and what it accepts)."""


@dataclass(frozen=True)
class Links:
    """How a member reaches the federation, and where its details go."""

    federation: str
    key: str
    listen: str | None = None
    connect_timeout_s: float = 60.0
    insecure_cleartext: bool = False
    emulate_rtt_ms: float = 0.0
    emulate_mbit: float = 0.0
    quiet: bool = False
    log: str | None = None

    def validate(self) -> None:
        if self.connect_timeout_s <= 0:
            raise JobError(f"connect timeout must be > 0 s, got {self.connect_timeout_s}")
        if self.emulate_rtt_ms < 0 or self.emulate_mbit < 0:
            raise JobError("emulated round-trip time and bandwidth must be >= 0")


@dataclass(frozen=True)
class TrainJob:
    """What ``mpc-fl party`` does: train on this party's file, score its test rows, report."""

    role: str
    data: str
    protocol: str
    options: dict[str, Any]
    links: Links
    id_col: str = "id"
    align: str = "psi"
    split: str = "random"
    split_key: str | None = None
    keep_scores: bool = False
    save_model: str | None = None
    insecure_tfp: bool = False
    out: str | None = None
    features: str = "all"
    #: what a provider releases of its features as reason codes (mpc_fl.models.reasons.RELEASES),
    #: its groups (a JSON file) for "group", and the name its data goes by in a reason
    release: str = "none"
    groups: str | None = None
    release_label: str = "partner data"
    #: report feature importance: each party its own, the bank a provider's at its release level
    importance: bool = False

    kind = "train"

    def validate(self) -> TrainJob:
        """This job with its options type-checked; raises :class:`JobError` / ValueError in one line."""
        from mpc_fl.protocols import check_options

        self.links.validate()
        _choice("--align", self.align, ALIGNMENTS)
        _choice("--split", self.split, SPLITS)
        _choice("--features", self.features, FEATURES)
        if self.split_key and self.role != BANK:
            raise JobError("--split-key is the bank's secret; providers do not take it")
        self.reason_release()
        if self.importance:
            from mpc_fl.protocols import check_importance

            try:
                check_importance(self.protocol)
            except ValueError as err:
                raise JobError(str(err)) from None
        return dataclasses.replace(self, options=check_options(self.protocol, self.options))

    def reason_release(self):  # noqa: ANN201 - a mpc_fl.models.reasons.Release
        """What this party releases as reason codes (the bank: its own features, by name)."""
        from mpc_fl.models.reasons import BANK_RELEASE, RELEASES, Release

        if self.role == BANK:
            if self.release != "none" or self.groups is not None:
                raise JobError("--release/--groups: the bank's own features are always reasons by name")
            return BANK_RELEASE
        _choice("--release", self.release, RELEASES)
        try:
            return Release.read(self.release, self.groups, self.release_label)
        except ValueError as err:
            raise JobError(str(err)) from None

    @property
    def dealer(self) -> bool:
        """Whether this run has a dealer (an unknown protocol: assume it may, to tell it of a failure)."""
        from mpc_fl.protocols import REGISTRY, uses_crypten

        return self.protocol not in REGISTRY or (uses_crypten(self.protocol) and not self.insecure_tfp)


@dataclass(frozen=True)
class ScoreJob:
    """What ``mpc-fl score-party`` does: score a new file with this party's saved part."""

    role: str
    data: str
    model: str
    links: Links
    id_col: str = "id"
    label_col: str = "y"
    align: str = "psi"
    out: str | None = None
    scores: str | None = None
    scorecard: str | None = None
    #: reason codes per application (0: none), and the outcome they argue for
    reasons: int = 0
    adverse: str = "y1"

    kind = "score"
    dealer = True  # a scoring run may have one; a member told of a failure need not be there

    def validate(self) -> ScoreJob:
        self.links.validate()
        _choice("--align", self.align, ALIGNMENTS)
        if self.scores and self.role != BANK:
            raise JobError("--scores: only the bank gets scores")
        if self.scorecard is not None:
            from mpc_fl.models.scorecard import Scorecard

            if self.role != BANK:
                raise JobError("--scorecard: the bank puts its scores in points")
            card = Scorecard.parse(self.scorecard)  # one line naming what is wrong
            if self.reasons and card.higher == self.adverse:
                raise JobError(
                    f"--adverse {self.adverse}: the scorecard gives that outcome more points; reasons argue "
                    "for the outcome with fewer"
                )
        if not 0 <= self.reasons <= MAX_REASONS:
            raise JobError(f"--reasons must be 0 to {MAX_REASONS}, got {self.reasons}")
        from mpc_fl.models.reasons import ADVERSE

        _choice("--adverse", self.adverse, ADVERSE)
        return self


@dataclass(frozen=True)
class ShortlistJob:
    """What ``mpc-fl shortlist-party`` does: score a provider's prospects with a prospect model and
    give the provider the shortlist, chosen on the shares (:mod:`mpc_fl.crypto.shortlist`).

    The bank has no rows (a prospect is not its customer) and chooses how the list is drawn:
    ``top_k`` rows, or every row whose score reaches ``threshold`` (a probability, kept secret
    from the provider). The provider names its file and where the list goes.
    ``reveal_scores`` (both must say so): the provider gets every prospect's score as well.
    """

    role: str
    model: str
    links: Links
    data: str | None = None
    id_col: str = "id"
    top_k: int | None = None
    threshold: float | None = None
    reveal_scores: bool = False
    drop_known: bool = False
    shortlist: str | None = None
    out: str | None = None

    kind = "shortlist"
    dealer = True  # the shortlist is chosen on CrypTen shares, whatever the model's protocol

    def validate(self) -> ShortlistJob:
        self.links.validate()
        if self.role == BANK:
            if (self.top_k is None) == (self.threshold is None):
                raise JobError(
                    "the bank chooses the shortlist: give exactly one of --top-k K or --threshold P"
                )
            if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
                raise JobError(f"--top-k must be a whole number >= 1, got {self.top_k!r}")
            if self.threshold is not None and not 0.0 < float(self.threshold) < 1.0:
                raise JobError(
                    f"--threshold is a probability strictly between 0 and 1, got {self.threshold!r}"
                )
            if self.data or self.shortlist or self.drop_known:
                raise JobError(
                    "the bank has no prospects: --data, --shortlist and --drop-known are the provider's"
                )
        else:
            if self.top_k is not None or self.threshold is not None:
                raise JobError(
                    "--top-k and --threshold are the bank's choice; the provider learns K from its list"
                )
            if not self.data:
                raise JobError("the provider needs --data: its file of prospects to score")
        return self


@dataclass(frozen=True)
class AttributeJob:
    """What ``mpc-fl attribute-party`` does: find which referred SMEs took up a product (a PSI).

    The provider inputs the SMEs it referred, the bank its product take-ups; each learns the
    intersection (and the size of the other's list) and writes it to ``matches``.
    """

    role: str
    data: str
    links: Links
    id_col: str = "id"
    align: str = "psi"
    points_per_takeup: int = 0
    matches: str | None = None
    out: str | None = None

    kind = "attribute"
    dealer = False

    def validate(self) -> AttributeJob:
        self.links.validate()
        _choice("--align", self.align, tuple(a for a in ALIGNMENTS if a != "sorted"))
        if self.points_per_takeup < 0:
            raise JobError(f"--points-per-takeup must be >= 0, got {self.points_per_takeup}")
        if self.points_per_takeup and self.role == BANK:
            raise JobError("--points-per-takeup: the provider awards the points")
        return self


@dataclass(frozen=True)
class DealerJob:
    """What ``mpc-fl dealer`` does: serve the parties' correlated randomness (``forever``: a service's)."""

    links: Links
    forever: bool = False

    kind = "dealer"
    role = "dealer"

    def validate(self) -> DealerJob:
        self.links.validate()
        return self


Job = TrainJob | ScoreJob | ShortlistJob | AttributeJob | DealerJob
_KINDS: dict[str, type[Job]] = {
    "train": TrainJob,
    "score": ScoreJob,
    "shortlist": ShortlistJob,
    "attribute": AttributeJob,
    "dealer": DealerJob,
}


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise JobError(f"{flag} {value!r}: choose from {', '.join(choices)}")


def write_job(job: Job, path: Path) -> Path:
    """The job as this party's JSON file (0600: it names the party's key file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": JOB_FORMAT, "kind": job.kind, "job": asdict(job)}, indent=1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def read_job(path: Path) -> Job:
    """A job file back as a validated job; one line naming the file for anything else."""
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != JOB_FORMAT or doc.get("kind") not in _KINDS:
            raise JobError(f"format {doc.get('format')!r}, kind {doc.get('kind')!r}")
        fields = dict(doc["job"])
        fields["links"] = Links(**fields["links"])
        job = _KINDS[doc["kind"]](**fields)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise JobError(f"{path}: not an mpc-fl job file ({err})") from None
    return job.validate()


@dataclass
class PartyReport:
    """What one party reports of a training run (``--out``)."""

    role: str
    protocol: str
    params: dict
    n_input: int
    n_aligned: int
    n_train: int
    n_test: int
    fit_s: float
    score_s: float
    peak_rss_mb: float
    ledger: dict
    metrics: dict[str, float] = field(default_factory=dict)
    scores: list[float] | None = None
    test_ids: list[str] | None = None
    test_labels: list[int] | None = None
    split: str = "random"
    alignment: str = "psi"
    #: protocol-specific facts of the run (e.g. SS-GBDT's reconstructable nodes per party)
    run_info: dict = field(default_factory=dict)
    #: with --importance: {"own": {kind: {feature: value}}}, at the bank also {provider: {kind: {unit: value}}}
    importance: dict = field(default_factory=dict)
    #: seconds from this party's process start to its report
    wall_s: float | None = None
    #: seconds from this party's process start to being ready to connect
    ready_s: float | None = None
    #: where this party saved its part of the model, if it did
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScoreReport:
    """What one party reports of a scoring run (``--out``)."""

    role: str
    protocol: str
    model: str
    n_input: int
    n_aligned: int
    score_s: float
    ledger: dict
    ids: list[str] | None = None
    scores: list[float] | None = None
    #: when the bank's file to score carries labels: the metrics of these scores
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    #: population stability index of this party's own features (and, at the bank, "score")
    stability: dict[str, float] = field(default_factory=dict)
    #: at the bank with --reasons: per scored row, [(unit name, contribution toward adverse)]
    reasons: list[list[tuple[str, float]]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShortlistReport:
    """What one party reports of a shortlist run (``--out``): the provider its list, the bank K."""

    role: str
    protocol: str
    model: str
    selection: str
    n_scored: int
    k: int | None
    score_s: float
    ledger: dict
    n_dropped_known: int = 0
    shortlist: list[str] | None = None
    scores: list[float] | None = None
    wall_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttributeReport:
    """What one party reports of an attribution (``--out``)."""

    role: str
    n_input: int
    n_peer: int
    n_matched: int
    matched: list[str]
    points: int
    ledger: dict
    wall_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunRecord:
    """A local run, as ``run.json`` holds it: the bank's results, every party's report, the traffic."""

    status: str
    protocol: str
    params: dict
    alignment: str
    split: str
    dealer: str
    links: str
    emulated_network: dict | None
    metrics: dict[str, float]
    run_info: dict
    n_aligned: int
    n_train: int
    fit_s: float
    score_s: float
    wall_s: float
    models: dict[str, str | None] | None
    traffic: dict
    parties: dict[str, PartyReport]
    provenance: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScoreRecord:
    """A local scoring run (``score.json``)."""

    protocol: str
    model: str
    n_aligned: int
    score_s: float
    wall_s: float
    scores_file: str
    traffic: dict
    parties: dict[str, ScoreReport]
    provenance: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShortlistRecord:
    """A local shortlist run (``shortlist.json``): the list's size and cost, and each party's report."""

    protocol: str
    model: str
    selection: str
    n_scored: int
    k: int
    score_s: float
    wall_s: float
    shortlist_file: str
    traffic: dict
    parties: dict[str, ShortlistReport]
    provenance: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttributeRecord:
    """A local attribution (``attribution.json``)."""

    n_matched: int
    points: int
    wall_s: float
    matches: dict[str, str]
    traffic: dict
    parties: dict[str, AttributeReport]
    provenance: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
