"""CrypTen's communicator over the member's encrypted links instead of gloo.

Why: every byte between parties must be authenticated and encrypted, and gloo cannot do
that (no TLS in this torch build; an all-reduce sums plaintext inside gloo). Here each
CrypTen collective becomes point-to-point messages on :class:`~mpc_fl.runtime.mesh.Mesh`
links, one frame channel per CrypTen process group, and the reduction happens locally:

* 2 parties: an all-reduce is one message each way (what gloo does too);
* k parties: every party sends its tensor to the k-1 others (one round, (k-1)x the bytes,
  instead of gloo's 2(k-1) ring steps).

Objects (CrypTen's dealer requests and replies) travel as tagged JSON, never pickle, so a
peer cannot make this party run code. The ledger counts one round per communication call
and the bytes the links carry. The runtime imports this module only when a protocol uses
CrypTen; it knows nothing of models.
"""

from __future__ import annotations

import mpc_fl.crypto.secure_crypten  # noqa: F401  (must precede any crypten import)

# isort: split

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from crypten.communicator.communicator import Communicator

from mpc_fl.runtime.errors import ProtocolMismatchError
from mpc_fl.runtime.federation import Federation
from mpc_fl.runtime.mesh import CRYPTEN_MAIN, CRYPTEN_TTP, CRYPTEN_TTP_COMM, Mesh

_SUM, _BXOR = dist.ReduceOp.SUM, dist.ReduceOp.BXOR


@dataclass(frozen=True)
class Group:
    """A CrypTen process group: its members' ranks and the frame channel its messages use."""

    ranks: tuple[int, ...]
    channel: int


def _as_bytes(t: torch.Tensor) -> memoryview:
    a = t.detach().contiguous().numpy()
    return memoryview(a.reshape(-1).view(np.uint8))  # (a view: an empty tensor gives zero bytes)


# ---------------------------------------------------------------------- safe object codec
def encode_obj(obj: Any) -> bytes:
    """JSON with tags for tuples, sizes and tensors; anything else is refused (no pickle)."""

    def enc(o: Any) -> Any:
        if o is None or isinstance(o, bool | int | float | str):
            return o
        if isinstance(o, torch.Size):
            return {"size": list(o)}
        if isinstance(o, tuple):
            return {"tuple": [enc(x) for x in o]}
        if isinstance(o, list):
            return [enc(x) for x in o]
        if isinstance(o, dict) and all(isinstance(k, str) for k in o):
            return {"dict": {k: enc(v) for k, v in o.items()}}
        if isinstance(o, torch.Tensor):
            a = o.detach().contiguous().numpy()
            return {
                "tensor": {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a).decode()}
            }
        raise TypeError(f"cannot send a {type(o).__name__} to a peer (only plain data and tensors)")

    return json.dumps(enc(obj)).encode()


def decode_obj(data: bytes | bytearray) -> Any:
    def dec(o: Any) -> Any:
        if isinstance(o, list):
            return [dec(x) for x in o]
        if not isinstance(o, dict):
            return o
        (tag, v), *rest = o.items()
        if rest:
            raise ProtocolMismatchError("malformed object from a peer")
        if tag == "size":
            return torch.Size(int(x) for x in v)
        if tag == "tuple":
            return tuple(dec(x) for x in v)
        if tag == "dict":
            return {k: dec(x) for k, x in v.items()}
        if tag == "tensor":
            dtype = np.dtype(v["dtype"])
            if dtype.kind not in "iub":
                raise ProtocolMismatchError(f"refusing a tensor of dtype {dtype} from a peer")
            a = np.frombuffer(base64.b64decode(v["data"]), dtype=dtype).reshape(v["shape"])
            return torch.from_numpy(a.copy())
        raise ProtocolMismatchError(f"unknown object tag {tag!r} from a peer")

    try:
        doc = json.loads(bytes(data).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolMismatchError(
            "a peer sent something that is not an object message (out of step?)"
        ) from None
    return dec(doc)


class _Done:
    """What an isend returns: sends are complete once queued on the link."""

    def wait(self) -> None:
        return None

    def is_completed(self) -> bool:
        return True


class _PendingRecv:
    def __init__(self, comm: MeshCommunicator, tensor: torch.Tensor, src: int, group: Group):
        self._args = (tensor, src, group)
        self._comm = comm
        self._done = False

    def wait(self) -> None:
        if not self._done:
            self._comm._recv_into(*self._args)
            self._done = True

    def is_completed(self) -> bool:
        return self._done


class MeshCommunicator(Communicator):
    """CrypTen's communicator interface (what ``crypten.communicator.get()`` returns)."""

    instance: MeshCommunicator | None = None

    def __init__(self, mesh: Mesh, fed: Federation, rank: int, dealer: bool):
        self.mesh, self.fed = mesh, fed
        self.rank = rank
        self.world_size = fed.n_parties  # computing parties; the dealer (if any) is rank world_size
        total = fed.n_parties + int(dealer)
        self.main_group = Group(tuple(range(fed.n_parties)), CRYPTEN_MAIN)
        self.ttp_group = Group(tuple(range(total)), CRYPTEN_TTP)
        self.ttp_comm_group = Group((0, total - 1), CRYPTEN_TTP_COMM)
        self.ttp_initialized = dealer
        self._name = fed.name_of(rank)
        self.reset_communication_stats()

    # ------------------------------------------------------------------ registry (CrypTen's classmethods)
    @classmethod
    def is_initialized(cls) -> bool:
        return cls.instance is not None

    @classmethod
    def get(cls) -> MeshCommunicator | None:
        return cls.instance

    @classmethod
    def initialize(cls, rank: int, world_size: int, init_ttp: bool = False) -> None:
        if cls.instance is None:
            raise RuntimeError("join the federation first (mpc_fl.runtime.session.connect)")

    @classmethod
    def shutdown(cls) -> None:
        inst = cls.instance
        if inst is not None and inst.rank == 0 and inst.ttp_initialized:
            inst.send_obj("terminate", inst.get_ttp_rank(), inst.ttp_group)  # CrypTen's dealer stops on this
        cls.instance = None

    # ------------------------------------------------------------------ plumbing
    def _peer(self, rank: int) -> str:
        return self.fed.name_of(rank)

    def _send(self, data: memoryview | bytes, dst: int, group: Group) -> None:
        self.mesh.send(self._peer(dst), group.channel, data)

    def _recv_bytes(self, src: int, group: Group, expect: int | None = None) -> bytearray:
        data = self.mesh.recv(self._peer(src), group.channel)
        if expect is not None and len(data) != expect:
            raise ProtocolMismatchError(
                f"{self._name}: expected {expect} bytes from {self._peer(src)!r} but got {len(data)}: "
                f"the parties are not running the same computation"
            )
        return data

    def _recv_into(self, tensor: torch.Tensor, src: int, group: Group) -> torch.Tensor:
        data = self._recv_bytes(src, group, tensor.numel() * tensor.element_size())
        if tensor.numel() == 0:
            return tensor
        tensor.copy_(torch.frombuffer(data, dtype=tensor.dtype).view(tensor.shape))
        return tensor

    def _book(self) -> None:
        self.comm_rounds += 1
        self.mesh.ledger.record_round()

    def _others(self, group: Group) -> list[int]:
        return [r for r in group.ranks if r != self.rank]

    @staticmethod
    def _combine(a: torch.Tensor, b: torch.Tensor, op: Any) -> torch.Tensor:
        if op == _SUM:
            return a.add_(b)
        if op == _BXOR:
            return a.bitwise_xor_(b)
        raise ValueError(f"unsupported reduce op {op}")

    @staticmethod
    def _pack(tensors: list[torch.Tensor]) -> bytes:
        return b"".join(bytes(_as_bytes(t)) for t in tensors)

    @staticmethod
    def _unpack(data: bytearray, like: list[torch.Tensor]) -> list[torch.Tensor]:
        out, pos = [], 0
        for t in like:
            n = t.numel() * t.element_size()
            if n == 0:  # (frombuffer refuses a count of 0)
                out.append(torch.empty(t.shape, dtype=t.dtype))
                continue
            out.append(
                torch.frombuffer(data, dtype=t.dtype, offset=pos, count=t.numel()).view(t.shape).clone()
            )
            pos += n
        return out

    # ------------------------------------------------------------------ point to point
    def send(self, tensor: torch.Tensor, dst: int, group: Group | None = None) -> None:
        self._book()
        self._send(_as_bytes(tensor), dst, group or self.main_group)

    def recv(self, tensor: torch.Tensor, src: int | None = None, group: Group | None = None) -> torch.Tensor:
        if src is None:
            raise ValueError("receiving from any source is not supported; name the sender")
        self._book()
        return self._recv_into(tensor.clone(), src, group or self.main_group)

    def isend(self, tensor: torch.Tensor, dst: int, group: Group | None = None) -> _Done:
        self.send(tensor, dst, group)
        return _Done()

    def irecv(self, tensor: torch.Tensor, src: int | None = None, group: Group | None = None) -> _PendingRecv:
        if src is None:
            raise ValueError("receiving from any source is not supported; name the sender")
        self._book()
        return _PendingRecv(self, tensor, src, group or self.main_group)

    def exchange(self, payloads: dict[int, bytes], sizes: dict[int, int]) -> dict[int, bytearray]:
        """One round of point-to-point messages: send each named peer its payload, then receive
        from each peer in ``sizes`` exactly that many bytes (both sides derive the sizes from public
        shapes). Why: a product with one party's private bits sends different things each way
        (masked shares one way, masked bits the other), which no collective expresses.
        """
        group = self.main_group
        self._book()
        for r, data in payloads.items():
            self._send(data, r, group)
        return {r: self._recv_bytes(r, group, n) for r, n in sizes.items()}

    # ------------------------------------------------------------------ collectives
    def broadcast(self, input: Any, src: int, group: Group | None = None, batched: bool = False) -> Any:  # noqa: A002
        group = group or self.main_group
        tensors = input if batched else [input]
        self._book()
        if self.rank == src:
            payload = self._pack(tensors)
            for r in self._others(group):
                self._send(payload, r, group)
        else:
            data = self._recv_bytes(src, group, sum(t.numel() * t.element_size() for t in tensors))
            for t, v in zip(tensors, self._unpack(data, tensors), strict=True):
                t.copy_(v)
        return input

    def all_reduce(self, input: Any, op: Any = _SUM, batched: bool = False) -> Any:  # noqa: A002
        group = self.main_group
        tensors = [t.clone() for t in (input if batched else [input])]
        self._book()
        payload = self._pack(tensors)
        others = self._others(group)
        for r in others:
            self._send(payload, r, group)
        n = len(payload)
        for r in others:
            for t, v in zip(tensors, self._unpack(self._recv_bytes(r, group, n), tensors), strict=True):
                self._combine(t, v, op)
        return tensors if batched else tensors[0]

    def reduce(self, input: Any, dst: int, op: Any = _SUM, batched: bool = False) -> Any:  # noqa: A002
        group = self.main_group
        tensors = [t.clone() for t in (input if batched else [input])]
        self._book()
        payload = self._pack(tensors)
        if self.rank != dst:
            self._send(payload, dst, group)
            return None
        for r in self._others(group):
            for t, v in zip(
                tensors, self._unpack(self._recv_bytes(r, group, len(payload)), tensors), strict=True
            ):
                self._combine(t, v, op)
        return tensors if batched else tensors[0]

    def gather(self, tensor: torch.Tensor, dst: int) -> list:
        group = self.main_group
        self._book()
        if self.rank != dst:
            self._send(_as_bytes(tensor), dst, group)
            return [None]
        out = []
        for r in group.ranks:
            out.append(
                tensor.clone() if r == self.rank else self._recv_into(torch.empty_like(tensor), r, group)
            )
        return out

    def all_gather(self, tensor: torch.Tensor) -> list:
        group = self.main_group
        self._book()
        for r in self._others(group):
            self._send(_as_bytes(tensor), r, group)
        return [
            tensor.clone() if r == self.rank else self._recv_into(torch.empty_like(tensor), r, group)
            for r in group.ranks
        ]

    def scatter(self, scatter_list: list, src: int, size: Any = None, device: Any = None) -> torch.Tensor:
        group = self.main_group
        self._book()
        if self.rank == src:
            for r in self._others(group):
                self._send(_as_bytes(scatter_list[r]), r, group)
            return scatter_list[self.rank]
        if size is None:
            size = scatter_list[self.rank].size()
        return self._recv_into(torch.empty(size, dtype=torch.long), src, group)

    def barrier(self, group: Group | None = None) -> None:
        group = group or self.main_group
        self._book()
        for r in self._others(group):
            self._send(b"", r, group)
        for r in self._others(group):
            self._recv_bytes(r, group, 0)

    # ------------------------------------------------------------------ objects
    def send_obj(self, obj: Any, dst: int, group: Group | None = None) -> None:
        self._book()
        self._send(encode_obj(obj), dst, group or self.main_group)

    def recv_obj(self, src: int, group: Group | None = None) -> Any:
        self._book()
        return decode_obj(self._recv_bytes(src, group or self.main_group))

    def broadcast_obj(self, obj: Any, src: int, group: Group | None = None) -> Any:
        group = group or self.main_group
        self._book()
        if self.rank == src:
            data = encode_obj(obj)
            for r in self._others(group):
                self._send(data, r, group)
            return obj
        return decode_obj(self._recv_bytes(src, group))

    # ------------------------------------------------------------------ identity
    def get_world_size(self) -> int:
        return self.world_size

    def get_rank(self) -> int:
        return self.rank

    def get_ttp_rank(self) -> int:
        return self.world_size

    def set_name(self, name: str) -> None:
        self._name = name

    def get_name(self) -> str:
        return self._name

    def get_distributed_backend(self) -> str:
        return "mpc_fl-tls" if self.mesh.tls else "mpc_fl-cleartext"


def start_crypten(mesh: Mesh, fed: Federation, rank: int, *, dealer: bool) -> None:
    """Make CrypTen talk over ``mesh`` and draw from cryptographic streams (parties and dealer alike).

    With a dealer, triples come from CrypTen's TTP (a separate, non-colluding member). Without
    one CrypTen runs TFP, where the bank generates every triple and can unmask every opened
    value: insecure, for debugging only (``--insecure-tfp``).
    """
    import crypten.communicator as cc

    from mpc_fl.crypto.secure_crypten import crypten, installed

    if not installed():
        raise RuntimeError("CrypTen's cryptographic randomness is not installed")
    crypten.cfg.mpc.provider = "TTP" if dealer else "TFP"
    cc.DistributedCommunicator = MeshCommunicator  # what crypten.communicator.get() hands out
    MeshCommunicator.instance = MeshCommunicator(mesh, fed, rank, dealer)
    if rank < fed.n_parties:
        crypten._setup_prng()
        if dealer:
            crypten.mpc.provider.ttp_provider.TTPClient._init()


def stop_crypten(*, complete: bool = True) -> None:
    """Forget every piece of CrypTen state (streams, dealer client, communicator), so a member can join again.

    ``complete``: the run ended well, so party 0 tells the dealer to stop (CrypTen's "terminate");
    after a failure the links are going down anyway and nothing is sent.
    """
    from mpc_fl.crypto.secure_crypten import crypten

    inst = MeshCommunicator.instance
    if inst is not None and complete:
        MeshCommunicator.shutdown()
    MeshCommunicator.instance = None
    crypten.mpc.provider.ttp_provider.TTPClient.uninit()
    crypten.generators = {k: {} for k in crypten.generators}
