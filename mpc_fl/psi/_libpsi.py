"""Load SecretFlow's PSI library (``libpsi``) and its link layer from the ``spu`` wheel.

Why this module: ``spu`` 0.9.5 is the only well-kept Python package we found that ships RR22
and KKRT PSI. Its ``__init__`` imports its JAX front-end, which pins numpy<2 and jax<=0.4.34
(our environment has numpy 2). The PSI needs none of that: only the two compiled libraries
``libspu`` (for ``link.Context``) and ``libpsi``. We load those two extension modules directly
from the installed wheel, without running ``spu/__init__.py``. They import and run on numpy 2
(they do not use numpy). Install the wheel with ``pip install --no-deps spu==0.9.5``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

__all__ = ["SPU_VERSION", "check_installed", "load"]

SPU_VERSION = "0.9.5"
_loaded: tuple[ModuleType, ModuleType] | None = None


class LibPsiMissing(ImportError):
    """The ``spu`` wheel (for its PSI library) is not installed."""


def _load_extension(directory: str, name: str) -> ModuleType:
    full = f"spu.{name}"
    if full in sys.modules:
        return sys.modules[full]
    path = os.path.join(directory, f"{name}.so")
    spec = importlib.util.spec_from_file_location(full, path)
    if spec is None or spec.loader is None or not os.path.exists(path):
        raise LibPsiMissing(f"the spu wheel has no {name}.so at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module  # libpsi's signatures refer to spu.libspu types by this name
    spec.loader.exec_module(module)
    return module


def _missing() -> LibPsiMissing:
    return LibPsiMissing(
        f"OT-based PSI needs SecretFlow's PSI library from the spu wheel: "
        f"pip install --no-deps spu=={SPU_VERSION} (or use --align ecdh)"
    )


def _wheel_directory() -> str:
    """Where the ``spu`` wheel is installed, found without importing it."""
    spec = importlib.util.find_spec("spu")
    if spec is None or not spec.submodule_search_locations:
        raise _missing()
    return list(spec.submodule_search_locations)[0]


def check_installed() -> None:
    """Raise :class:`LibPsiMissing` if the wheel is absent, without loading the library into this process."""
    directory = _wheel_directory()
    for name in ("libspu", "libpsi"):
        if not os.path.exists(os.path.join(directory, f"{name}.so")):
            raise LibPsiMissing(f"the spu wheel has no {name}.so in {directory}")


def load() -> tuple[ModuleType, ModuleType]:
    """``(libspu, libpsi)``; raise :class:`LibPsiMissing` with the install command if absent."""
    global _loaded
    if _loaded is None:
        directory = _wheel_directory()
        libspu = _load_extension(directory, "libspu")
        libpsi = _load_extension(directory, "libpsi")
        _loaded = (libspu, libpsi)
    return _loaded
