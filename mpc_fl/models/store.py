"""A party's part of a trained joint model: one file per party, safe and versioned (no pickle).

Why one part per party: after training, each party keeps only what it is allowed to know
(its shares of secret-shared weights, its own thresholds and scaling statistics, the public
structure), so scoring later needs every party again, each with its own part, and a part
never holds another party's data. The format is a NumPy ``.npz`` archive read with
``allow_pickle=False``: plain arrays plus one JSON document (``__meta__``) with the format
and protocol versions, the role, the protocol and its hyperparameters, and the model
fingerprint. The fingerprint is the same in every party's part of one model (a random
model id the bank drew at the end of training, hashed with the public settings); the
parties compare it in their handshake before scoring, so parts of different models, or of
another version, never score together.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Version of the file layout; a part with another one is refused with a clear error.
PART_FORMAT = 1
META = "__meta__"


class ModelPartError(ValueError):
    """A model part is missing, unreadable, of another version, or does not fit this run."""


@dataclass
class ModelPart:
    """What one party keeps of one trained model."""

    role: str
    protocol: str
    protocol_version: int
    params: dict
    parties: list[str]
    fingerprint: str
    #: this party's own feature names and scaling (pipeline), and the protocol's own state
    feature_names: list[str]
    meta: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.protocol} model {self.fingerprint[:12]} ({self.role}'s part)"


def fingerprint(model_id: str, protocol: str, params: dict, parties: list[str]) -> str:
    """The same at every party of one trained model: its random id and the public settings, hashed."""
    doc = json.dumps(
        {"id": model_id, "protocol": protocol, "params": params, "parties": parties}, sort_keys=True
    )
    return hashlib.sha256(doc.encode()).hexdigest()


def save_part(part: ModelPart, path: Path) -> Path:
    """Write ``part`` (mode 0600: shares and thresholds are this party's secrets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "part_format": PART_FORMAT,
        "role": part.role,
        "protocol": part.protocol,
        "protocol_version": part.protocol_version,
        "params": part.params,
        "parties": part.parties,
        "fingerprint": part.fingerprint,
        "feature_names": part.feature_names,
        "meta": part.meta,
    }
    for key, a in part.arrays.items():
        if a.dtype == object:
            raise ModelPartError(f"array {key!r} is an object array: parts hold plain numbers only")
    tmp = path.with_suffix(".tmp.npz")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, **{META: np.array(json.dumps(meta, sort_keys=True))}, **part.arrays)
    tmp.replace(path)
    return path


def load_part(path: Path, *, role: str | None = None) -> ModelPart:
    """Read a part; refuse another format, a pickled payload, or a part of another role."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta: dict[str, Any] = json.loads(str(z[META]))
            arrays = {k: z[k] for k in z.files if k != META}
    except FileNotFoundError:
        raise ModelPartError(f"{path}: no such model part") from None
    except (ValueError, OSError, KeyError) as err:
        raise ModelPartError(f"{path}: not a model part written by mpc_fl ({err})") from None
    if meta.get("part_format") != PART_FORMAT:
        raise ModelPartError(
            f"{path}: model part format {meta.get('part_format')!r}; this mpc_fl reads format {PART_FORMAT}"
        )
    if role is not None and meta["role"] != role:
        raise ModelPartError(f"{path} is {meta['role']!r}'s part of the model, not {role!r}'s")
    return ModelPart(
        role=meta["role"],
        protocol=meta["protocol"],
        protocol_version=int(meta["protocol_version"]),
        params=meta["params"],
        parties=list(meta["parties"]),
        fingerprint=meta["fingerprint"],
        feature_names=list(meta["feature_names"]),
        meta=meta.get("meta", {}),
        arrays=arrays,
    )
