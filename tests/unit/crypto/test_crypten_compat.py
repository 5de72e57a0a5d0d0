"""The compatibility shim is what makes crypten usable on torch 2.13; these fail without it."""

from __future__ import annotations

import pickle
import subprocess
import sys
from fractions import Fraction

import pytest
import torch

from mpc_fl.crypto._crypten_compat import crypten, load


def test_plain_import_of_crypten_fails_without_the_shim():
    # A fresh interpreter that imports crypten directly hits torch's moved ONNX module.
    proc = subprocess.run([sys.executable, "-c", "import crypten"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "torch.onnx._internal.registration" in proc.stderr


def test_shim_makes_crypten_import_in_a_fresh_interpreter():
    code = "from mpc_fl.crypto._crypten_compat import crypten; print(crypten.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0.4.1"


def test_negative_values_decode_exactly():
    # Upstream decode returns -601.9999 for -600.9999 and is off by one for x <= -65535.
    enc = crypten.encoder.FixedPointEncoder()
    values = torch.tensor([-600.9999, -70000.5, -1.5, 0.0, 3.25], dtype=torch.float64)
    decoded = enc.decode(enc.encode(values))
    assert torch.allclose(decoded.double(), values, atol=1e-3)


def test_load_reads_pickled_objects_that_weights_only_rejects(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"w": Fraction(1, 3)}, path)
    with pytest.raises(pickle.UnpicklingError):
        crypten.load(path)  # upstream: torch's weights_only default refuses it
    assert load(path)["w"] == Fraction(1, 3)
