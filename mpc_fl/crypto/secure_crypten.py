"""CrypTen with cryptographic randomness: import ``crypten`` from here, never directly.

Why: CrypTen draws every secret (input sharing, pairwise zero shares, the dealer's triples)
from ``torch.Generator`` streams, i.e. MT19937 seeded with 32 effective bits; the review
recovered a party's whole feature matrix by brute-forcing one seed (security_review.md F1).
Importing this module (after the torch-2.13 import shim, :mod:`._crypten_compat`) replaces,
in every CrypTen module:

* ``generate_random_ring_element`` / ``generate_kbit_random_tensor``: drawn from a
  :class:`CryptoGenerator` (ChaCha20, :mod:`mpc_fl.crypto.prg`); a ``torch.Generator`` is
  refused with an error, so MT19937 cannot come back into the secure path by accident;
* ``crypten._setup_prng``: the pairwise ("prev"/"next"), local and global streams get
  256-bit keys from ``os.urandom``; neighbours exchange keys over the encrypted links;
* the dealer (TTP) set-up: the dealer draws one 256-bit key per party and sends it over
  that party's encrypted link (CrypTen sent a 64-bit seed of a 32-bit-seeded stream).

The draws keep CrypTen's order and sizes, so parties and the dealer stay in step.
It also routes CrypTen's comparisons through the carry-only sign test
(:mod:`mpc_fl.crypto.compare`) when two parties compute with the dealer.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from mpc_fl.crypto import compare
from mpc_fl.crypto._crypten_compat import crypten
from mpc_fl.crypto.prg import KEY_BYTES, PRG, new_key

# isort: split

import crypten.common.rng as _rng  # noqa: E402
from crypten.mpc.provider.ttp_provider import TTPClient, TTPServer  # noqa: E402

CPU = torch.device("cpu")


class CryptoGenerator:
    """Stands where CrypTen expects a ``torch.Generator``: a keyed ChaCha20 stream."""

    device = CPU

    def __init__(self, key: bytes):
        self.prg = PRG(key)


def _generator(generator: Any, kwargs: dict) -> CryptoGenerator:
    device = kwargs.get("device")
    if device is not None and torch.device(device).type != "cpu":
        raise RuntimeError("mpc_fl runs CrypTen on the CPU only")
    if generator is None:
        generator = crypten.generators["local"].get(CPU)
        if generator is None:
            raise RuntimeError("CrypTen's random streams exist only once this party has joined a federation")
    if not isinstance(generator, CryptoGenerator):
        raise TypeError(
            f"refusing a {type(generator).__name__} in the secure path: secrets come only from "
            "mpc_fl.crypto.prg (a torch.Generator is MT19937 with 32-bit seeds)"
        )
    return generator


def _shape(size: Any) -> tuple[int, ...]:
    return (int(size),) if isinstance(size, int) else tuple(int(s) for s in size)


def generate_random_ring_element(
    size: Any, ring_size: int = 2**64, generator: Any = None, **kwargs: Any
) -> torch.Tensor:
    """Uniform elements of Z_{2^64} from a cryptographic stream (CrypTen's signature)."""
    if ring_size != 2**64:
        raise ValueError("only CrypTen's ring Z_{2^64} is supported")
    return _generator(generator, kwargs).prg.ring_elements(_shape(size))


def generate_kbit_random_tensor(
    size: Any, bitlength: int | None = None, generator: Any = None, **kwargs: Any
) -> torch.Tensor:
    """Uniform ``bitlength``-bit integers from a cryptographic stream (CrypTen's signature)."""
    return _generator(generator, kwargs).prg.kbit(_shape(size), 64 if bitlength is None else bitlength)


def _key_tensor(key: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(key), dtype=torch.uint8)


def _setup_prng() -> None:
    """CrypTen's four stream families, each under a fresh 256-bit key (replaces ``crypten._setup_prng``)."""
    comm = crypten.communicator.get()
    rank, ws = comm.get_rank(), comm.get_world_size()
    next_key, local_key, global_key = new_key(), new_key(), new_key()
    if ws > 1:
        # the key shared with the next party; the previous party's key arrives the same way
        comm.isend(_key_tensor(next_key), (rank + 1) % ws)
        prev = torch.zeros(KEY_BYTES, dtype=torch.uint8)
        comm.irecv(prev, src=(rank - 1) % ws).wait()
        prev_key = bytes(prev.numpy())
    else:
        prev_key = next_key
    shared = comm.broadcast(_key_tensor(global_key), 0)  # public to the parties, secret from outsiders
    keys = {"prev": prev_key, "next": next_key, "local": local_key, "global": bytes(shared.numpy())}
    for family, key in keys.items():
        crypten.generators[family] = {CPU: CryptoGenerator(key)}


def _client_setup_generators(self: Any) -> None:
    """A party receives its 256-bit dealer key over its encrypted link to the dealer."""
    comm = crypten.communicator.get()
    key = comm.recv(torch.zeros(KEY_BYTES, dtype=torch.uint8), src=comm.get_ttp_rank(), group=self.ttp_group)
    self.generator = CryptoGenerator(bytes(key.numpy()))
    self.generator_cuda = None


def _server_setup_generators(self: Any) -> None:
    """The dealer draws one key per party and sends each over that party's link only."""
    comm = crypten.communicator.get()
    keys = [new_key() for _ in range(comm.get_world_size())]
    for rank, key in enumerate(keys):
        comm.send(_key_tensor(key), rank, group=self.ttp_group)
    self.generators = [CryptoGenerator(k) for k in keys]
    self.generators_cuda = [None] * len(keys)


_REPLACED = {
    "generate_random_ring_element": generate_random_ring_element,
    "generate_kbit_random_tensor": generate_kbit_random_tensor,
}


def install() -> None:
    """Point every CrypTen module at the functions above (idempotent)."""
    originals = {name: getattr(_rng, name) for name in _REPLACED}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "crypten" or name.startswith("crypten.")):
            continue
        for attr, new in _REPLACED.items():
            if getattr(module, attr, None) is originals[attr]:
                setattr(module, attr, new)
    crypten._setup_prng = _setup_prng
    TTPClient._TTPClient__TTPClient._setup_generators = _client_setup_generators
    TTPServer._setup_generators = _server_setup_generators
    compare.install(rng_is_secure=installed)  # comparisons only ever over the randomness above


def installed() -> bool:
    return _rng.generate_random_ring_element is generate_random_ring_element


def _drop_validation_hook() -> None:
    """Use CrypTensor's plain attribute lookup: CrypTen wraps it to check ``cfg.debug.validation_mode``
    on *every* attribute access (an omegaconf lookup, ~8% of SS-GBDT's compute, py-spy); mpc_fl
    never runs CrypTen's validation mode, so the check can only cost time."""
    from crypten.cryptensor import CrypTensor

    hooked = CrypTensor.__dict__["__getattribute__"]
    CrypTensor.__getattribute__ = getattr(hooked, "__wrapped__", hooked)


install()
_drop_validation_hook()

__all__ = ["CryptoGenerator", "crypten", "installed"]
