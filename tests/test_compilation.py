"""pet.compilation: the model with its transformers compiled (pet-driver --compile) gives the
model's energies, forces and virials, raw and averaged, and keeps its state; a machine without a
C++ compiler is told so before anything runs."""

import copy

import pytest
import torch

from driver import cli
from grids.averaging import GridAverage
from pet import checkpoint
from pet.compilation import compile_problem, compile_transformers
from pet.compute import compute
from pet.neighbors import graph_from_atoms


NO_COMPILER = compile_problem("cpu")
"""Why torch.compile cannot run here (no C++ compiler), or None."""
needs_compiler = pytest.mark.skipif(NO_COMPILER is not None, reason=str(NO_COMPILER))


@needs_compiler
def test_compiled_model_equals_the_model(tiny_model, water_cell, water_cluster):
    compiled = compile_transformers(copy.deepcopy(tiny_model))
    assert list(compiled.state_dict()) == list(tiny_model.state_dict())  # checkpoints unchanged
    for atoms in (water_cell, water_cluster):
        graph = graph_from_atoms(atoms, tiny_model.hypers.cutoff).to("cpu", torch.float64)
        for evaluate in (lambda model: compute(model, graph),
                         lambda model: GridAverage(model, "2i")(graph)):
            reference, result = evaluate(tiny_model), evaluate(compiled)
            torch.testing.assert_close(result.energy, reference.energy, rtol=0, atol=1e-10)
            torch.testing.assert_close(result.forces, reference.forces, rtol=0, atol=1e-10)
            if atoms is water_cell:
                torch.testing.assert_close(result.virial, reference.virial, rtol=0, atol=1e-10)


@needs_compiler
def test_a_compiled_model_saves_and_loads_as_the_model(tmp_path, tiny_model):
    path = tmp_path / "compiled.pt"
    checkpoint.save(path, compile_transformers(copy.deepcopy(tiny_model)))
    loaded = checkpoint.load(path, dtype=torch.float64)
    for name, value in tiny_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)


def test_a_machine_without_a_compiler_is_told_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++, c++ or clang++ there
    monkeypatch.delenv("CXX", raising=False)
    assert "needs a C++ compiler (g++, c++, clang++ or $CXX), none found" in compile_problem("cpu")
    with pytest.raises(SystemExit) as stop:
        cli.main(["--compile"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("pet-driver: error: --compile: torch.compile on a CPU needs "
                                              "a C++ compiler")
    compiler = tmp_path / "g++"
    compiler.write_text("#!/bin/sh\n")
    compiler.chmod(0o755)
    assert compile_problem("cpu") is None


def test_compile_and_a_memory_budget_are_refused_together(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--compile", "--max-memory", "100"])
    assert stop.value.code == 2
    assert "give either --compile or --max-memory, not both" in capsys.readouterr().err
