"""Decoys that hide which SME applied: a fixed, keyed partition of the bank's customers.

Why a partition and not fresh decoys per query: decoys drawn afresh each time let the provider
intersect two or three queries for the same SME down to that SME, and decoys drawn from the
training overlap (which the provider knows) let a new applicant stand out. Here every customer in
the bank's feature store belongs to exactly one *anonymity set* of ``k + 1`` to ``2k + 1``
customers, and a query for any member sends the whole set, in the set's fixed order. The
provider's view of an application is therefore the same whichever member applied, however many
times it is queried, retried or scored for another product (the sets belong to the bank, not to
a model): the provider learns that *someone in this set* applied, and nothing that tells the
members apart. Its prior over the set is its prior over the bank's customers.

The sets are built once, from the bank's customers ordered by HMAC-SHA256 under a 256-bit key
from the OS (so the provider cannot predict who is grouped with whom), and saved in a file only
the bank reads (0600, the key beside them). They are never changed: a customer added to the
store later is placed when ``k + 1`` new customers have accumulated; until then a query for it
would show the provider who applied, and the service refuses it or warns, by policy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: What the service does with an application it cannot hide: refuse it, or score it and say so.
DECOY_POLICIES = ("refuse", "warn")
#: Decoys per applicant by default: the provider sees each application as one of at least 10 SMEs.
DEFAULT_DECOYS = 9
FORMAT = "mpc-fl anonymity sets 1"

REVEALS = "the provider learns that this SME applied"


class DecoyError(ValueError):
    """The anonymity sets cannot be built or loaded as asked (the message says why)."""


@dataclass
class AnonymitySets:
    """The bank's customers partitioned into sets of ``k + 1`` to ``2k + 1``, fixed once built."""

    k: int
    key: bytes
    sets: list[list[str]]
    path: Path | None = None
    set_of: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.set_of = {i: s for s, members in enumerate(self.sets) for i in members}

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, k: int, population: Iterable[str], key: bytes | None = None) -> AnonymitySets:
        """Partition ``population`` (at least ``k + 1`` customers); the last remainder joins the last set."""
        key = secrets.token_bytes(32) if key is None else key
        ordered = _keyed_order(key, set(population))
        if len(ordered) < k + 1:
            raise DecoyError(
                f"{k} decoys per application need at least {k + 1} bank customers, the feature store has {len(ordered)}"
            )
        sets = [ordered[i : i + k + 1] for i in range(0, len(ordered) - len(ordered) % (k + 1), k + 1)]
        sets[-1] += ordered[len(sets) * (k + 1) :]
        return cls(k, key, sets)

    @classmethod
    def open(cls, path: Path, k: int, population: Iterable[str]) -> AnonymitySets:
        """The bank's saved sets (built and saved on first use), with customers new since then placed."""
        path = Path(path)
        population = set(population)
        if not path.exists():
            sets = cls.build(k, population)
            sets.path = path
            sets.save()
            return sets
        sets = cls.load(path)
        if sets.k != k:
            raise DecoyError(
                f"{path} holds anonymity sets for {sets.k} decoys; sets for --decoys {k} would let the provider "
                f"intersect old and new sets: keep --decoys {sets.k} (or move the file away knowingly)"
            )
        if sets.place(population):
            sets.save()
        return sets

    def place(self, population: Iterable[str]) -> int:
        """Form new sets from the customers not yet in any set, in groups of ``k + 1``; returns how many."""
        new = _keyed_order(self.key, set(population) - self.set_of.keys())
        n_new = len(new) // (self.k + 1)
        for s in range(n_new):
            members = new[s * (self.k + 1) : (s + 1) * (self.k + 1)]
            self.set_of |= dict.fromkeys(members, len(self.sets))
            self.sets.append(members)
        return n_new

    # ------------------------------------------------------------------ use
    def covers(self, id_: str) -> bool:
        return id_ in self.set_of

    def query(self, ids: Iterable[str]) -> list[str]:
        """The ids to send for these (covered) applicants: their whole sets, in set order, each set once."""
        chosen = sorted({self.set_of[i] for i in ids})
        return [member for s in chosen for member in self.sets[s]]

    # ------------------------------------------------------------------ file
    @classmethod
    def load(cls, path: Path) -> AnonymitySets:
        try:
            doc = json.loads(Path(path).read_text())
            if doc.get("format") != FORMAT:
                raise DecoyError(f"{path}: not an anonymity-set file of this version")
            sets = cls(
                int(doc["k"]), bytes.fromhex(doc["key"]), [[str(i) for i in s] for s in doc["sets"]], path
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DecoyError(f"{path}: cannot read the bank's anonymity sets ({err})") from None
        if sum(map(len, sets.sets)) != len(sets.set_of) or any(len(s) < sets.k + 1 for s in sets.sets):
            raise DecoyError(f"{path}: the anonymity sets overlap or are smaller than {sets.k + 1}")
        return sets

    def save(self) -> None:
        """Write atomically, readable by the bank only (the file holds the key)."""
        assert self.path is not None
        doc = {"format": FORMAT, "k": self.k, "key": self.key.hex(), "sets": self.sets}
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _keyed_order(key: bytes, ids: set[str]) -> list[str]:
    return sorted(ids, key=lambda i: hmac.new(key, i.encode(), hashlib.sha256).digest())
