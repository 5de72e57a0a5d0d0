"""Make crypten 0.4.1 import and decode correctly on torch 2.13.

Import this module instead of ``crypten`` (``from mpc_fl.crypto._crypten_compat import crypten``),
everywhere, including party processes. It fixes exactly three things, measured in
../shared/docs/crypten.md:

1. ``import crypten`` fails: crypten imports ``torch.onnx._internal.registration``,
   which torch moved; crypten never uses the name, so a stub module is enough.
2. ``FixedPointEncoder.decode`` returns ``x - 1`` for some negative values (always for
   ``x <= -65535``); replaced by an exact division.
3. ``crypten.load`` fails under torch's ``weights_only=True`` default; :func:`load`
   passes ``weights_only=False`` (only ever for files this party wrote itself).
"""

from __future__ import annotations

import functools
import importlib
import sys
import types

_MOVED_ONNX_MODULE = "torch.onnx._internal.registration"

try:
    importlib.import_module(_MOVED_ONNX_MODULE)
except ImportError:
    _stub = types.ModuleType(_MOVED_ONNX_MODULE)
    _stub.registry = None  # type: ignore[attr-defined]
    sys.modules[_MOVED_ONNX_MODULE] = _stub

import crypten  # noqa: E402
import torch  # noqa: E402
from crypten.encoder import FixedPointEncoder, nearest_integer_division  # noqa: E402


def _exact_decode(self: FixedPointEncoder, tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None:
        return None
    if self._scale > 1:
        return (tensor.double() / self._scale).float()
    return nearest_integer_division(tensor, self._scale)


FixedPointEncoder.decode = _exact_decode


def load(f, **kwargs):  # noqa: ANN001, ANN201 - same signature as crypten.load
    """``crypten.load`` that works on torch >= 2.6 (trusted, self-written files only)."""
    kwargs.setdefault("load_closure", functools.partial(torch.load, weights_only=False))
    return crypten.load(f, **kwargs)


__all__ = ["crypten", "load"]
