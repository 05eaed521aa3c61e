"""torch.compile of a PET model's transformers, for faster inference (pet-driver --compile).

Each GNN layer's :class:`pet.transformer.Transformer` (the attention with the cutoff weights, the
layer norms, the feed-forward network: most of the element-wise work of an evaluation) is
compiled in place with dynamic shapes (``nn.Module.compile``: the module and its state dict keep
their names). The rest of the model is data-dependent (the token layout changes with the neighbour
counts) and stays eager. The first evaluation compiles (tens of seconds on a CPU; torch keeps the
kernels in its cache for later processes), a new kind of shape may compile again (seconds); the
results equal the eager model's to round-off. For inference only: training needs the derivatives
of the forces (double backward), which compiled code does not provide. The CPU kernels run on the
number of threads torch had when they were compiled, so the rotation averages of a compiled model
run one pass at a time instead of side by side (:mod:`pet.workers`: worker threads would
oversubscribe the cores; measured 2.05 s against 1.89 s for a 2i average of 64 molecules).
"""

import importlib.util
import os
import shutil

from .model import PET

CXX_COMPILERS = ("g++", "c++", "clang++")
"""C++ compilers torch's inductor can build CPU kernels with (or $CXX)."""


def compile_problem(device: str):
    """Why this machine cannot compile for ``device`` ("cpu", "cuda"), or None: a CPU needs a C++
    compiler, a GPU the triton package."""
    if str(device).startswith("cuda"):
        if importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs the triton package, which is not installed"
        return None
    candidates = ([os.environ["CXX"]] if os.environ.get("CXX") else []) + list(CXX_COMPILERS)
    if not any(shutil.which(name) for name in candidates):
        return f"torch.compile on a CPU needs a C++ compiler ({', '.join(CXX_COMPILERS)} or $CXX), none found"
    return None


def compile_transformers(model: PET) -> PET:
    """``model`` with the transformer of every layer compiled in place (dynamic shapes)."""
    for layer in model.layers:
        layer.transformer.compile(dynamic=True)
    model.compiled = True
    return model

