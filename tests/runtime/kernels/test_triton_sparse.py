"""The Triton kernels equal the torch reference, on a GPU or in Triton's interpreter on the CPU.

The cases live in triton_cases.py. TRITON_INTERPRET must be set before triton's first import
(triton.language's own @jit functions are built then), and other tests of this process may
have imported triton already, so without a GPU they run in a child process that sets it.
"""

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
    from triton_cases import *  # noqa: F403
else:

    def test_triton_kernels_in_interpreter():
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
        child = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert child.returncode == 0, child.stdout[-20000:] + child.stderr[-5000:]
