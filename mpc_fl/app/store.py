"""A party's part of a trained joint model: one file per party, safe and versioned (no pickle).

Why one part per party: after training, each party keeps only what it is allowed to know
(its shares of secret-shared weights, its own thresholds and scaling statistics, the public
structure), so scoring later needs every party again, each with its own part, and a part
never holds another party's data. The format is a NumPy ``.npz`` archive read with
``allow_pickle=False``: plain arrays plus one JSON document (``__meta__``) with the format
and protocol versions, the role, the protocol and its hyperparameters, the model
fingerprint and the part's content digest. The fingerprint is the same in every party's
part of one model (a random model id the bank drew at the end of training, hashed with the
public settings); the parties compare it in their handshake before scoring, so parts of
different models, or of another version, never score together. The content digest
(SHA-256 over the header and every array) is this part's own: the loader recomputes it,
so a part edited or damaged after it was saved is refused even if it kept its fingerprint.
It is not a signature: whoever can rewrite the file can recompute it.

A part is written to a fresh, randomly named file in the target folder (``O_EXCL`` and
``O_NOFOLLOW``, mode 0600) and renamed into place, so a leftover or planted file (or
symlink) never decides where the secrets go or who may read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: Version of the file layout; a part with another one is refused with a clear error.
#: 2: the header carries ``content_sha256`` (parts of format 1 have none: retrain).
PART_FORMAT = 2
META = "__meta__"
DIGEST = "content_sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Header fields and their JSON types (``int`` excludes booleans; lists hold strings).
_FIELDS: dict[str, type] = {
    "role": str,
    "protocol": str,
    "protocol_version": int,
    "params": dict,
    "parties": list,
    "fingerprint": str,
    "feature_names": list,
    "meta": dict,
    DIGEST: str,
}
_JSON_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


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


def content_digest(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the header (canonical JSON, the digest field left out) and every array.

    Each array counts with its name, dtype, shape and bytes; every piece is length-prefixed,
    so no two different parts hash the same way.
    """
    h = hashlib.sha256(b"mpc_fl model part\x00")

    def feed(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    feed(json.dumps({k: v for k, v in header.items() if k != DIGEST}, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        feed(name.encode())
        feed(a.dtype.str.encode())
        feed(json.dumps(list(a.shape)).encode())
        feed(a.tobytes(order="C"))
    return h.hexdigest()


def save_part(part: ModelPart, path: Path) -> Path:
    """Write ``part`` (mode 0600: shares and thresholds are this party's secrets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
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
    arrays = {k: np.asarray(a) for k, a in part.arrays.items()}
    for key, a in arrays.items():
        if key == META:
            raise ModelPartError(f"array name {META!r} is reserved for the part's header")
        if a.dtype == object:
            raise ModelPartError(f"array {key!r} is an object array: parts hold plain numbers only")
    header = json.loads(json.dumps(header, sort_keys=True))  # the digest covers what the loader reads
    header[DIGEST] = content_digest(header, arrays)
    doc = np.array(json.dumps(header, sort_keys=True))
    _write_private(path, lambda fh: np.savez(fh, **{META: doc}, **arrays))
    return path


def _write_private(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a new file at ``path`` through a fresh private temporary file, then rename it into place.

    Why: a predictable temporary name lets a leftover file keep its old (wider) mode and a
    planted symlink redirect the write; a random name opened with ``O_EXCL | O_NOFOLLOW``
    is always a new file of ours, and the rename replaces ``path`` itself (never a link's target).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(5):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o600)
            break
        except FileExistsError:
            continue
        except OSError as err:
            raise ModelPartError(f"{path}: cannot write the model part ({err.strerror or err})") from None
    else:
        raise ModelPartError(f"{path}: cannot create a fresh temporary file in {path.parent}")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # exactly 0600, whatever the umask
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_header(path: Path, header: Any) -> dict[str, Any]:
    """The header's fields, each of its JSON type; a clear error naming the file and the field."""
    if not isinstance(header, dict):
        raise ModelPartError(f"{path}: malformed model part: its header is not a JSON object")
    if header.get("part_format") != PART_FORMAT:
        raise ModelPartError(
            f"{path}: model part format {header.get('part_format')!r}; this mpc_fl reads format "
            f"{PART_FORMAT} (retrain the model to save it again)"
        )
    for name, kind in _FIELDS.items():
        if name not in header:
            raise ModelPartError(f"{path}: malformed model part: its header has no {name!r}")
        value = header[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ModelPartError(
                f"{path}: malformed model part: {name!r} is {type(value).__name__} {value!r:.60}, "
                f"expected {_JSON_NAMES[kind]}"
            )
    for name in ("parties", "feature_names"):
        if not all(isinstance(v, str) for v in header[name]):
            raise ModelPartError(f"{path}: malformed model part: {name!r} must be a list of strings")
    for name in ("fingerprint", DIGEST):
        if not _HEX64.fullmatch(header[name]):
            raise ModelPartError(f"{path}: malformed model part: {name!r} is not a SHA-256 hex digest")
    return header


def load_part(path: Path, *, role: str | None = None) -> ModelPart:
    """Read a part; refuse another format, a pickled payload, a malformed or altered part, another role."""
    path = Path(path)
    unreadable = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelPartError(f"{path}: no such model part") from None
    except unreadable as err:
        raise ModelPartError(f"{path}: not a model part written by mpc_fl ({err})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy loads as one array
        raise ModelPartError(f"{path}: not a model part written by mpc_fl (one array, not an archive)")
    try:
        with loaded as z:
            content = {k: z[k] for k in z.files}
    except unreadable as err:  # a damaged member, or a pickled (object) array
        raise ModelPartError(f"{path}: not a model part written by mpc_fl ({err})") from None
    if META not in content:
        raise ModelPartError(f"{path}: not a model part written by mpc_fl (it has no {META!r} header)")
    doc = content.pop(META)
    arrays = content
    if doc.ndim != 0 or doc.dtype.kind != "U":
        raise ModelPartError(f"{path}: malformed model part: {META!r} is not one JSON string")
    try:
        header = _check_header(path, json.loads(str(doc)))
    except json.JSONDecodeError as err:
        raise ModelPartError(f"{path}: malformed model part: its header is not valid JSON ({err})") from None
    if content_digest(header, arrays) != header[DIGEST]:
        raise ModelPartError(
            f"{path}: the model part was altered after it was saved: its content does not match "
            f"its digest (restore the file or retrain)"
        )
    if role is not None and header["role"] != role:
        raise ModelPartError(f"{path} is {header['role']!r}'s part of the model, not {role!r}'s")
    return ModelPart(
        role=header["role"],
        protocol=header["protocol"],
        protocol_version=header["protocol_version"],
        params=header["params"],
        parties=list(header["parties"]),
        fingerprint=header["fingerprint"],
        feature_names=list(header["feature_names"]),
        meta=header["meta"],
        arrays=arrays,
    )
