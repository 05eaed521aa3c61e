"""Smoke tests of the benchmarks (scripts/bench_*.py --quick): they run, print their tables, and
what they check along the way (the three ways of averaging agree, the batched average equals the
loop) holds. No timing is asserted: the figures belong to docs/performance.md."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *arguments, timeout: float = 300) -> str:
    """Run a benchmark as a process of its own (for those that run i-PI in their process)."""
    run = subprocess.run([sys.executable, str(SCRIPTS / name), *arguments], capture_output=True,
                         text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def run_in_process(name: str, arguments, monkeypatch, capsys):
    """(exit status, stdout, stderr) of a benchmark's main run in this process (no second torch
    import); the allocator is left alone (--no-retain-memory) and the threads as they are."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    specification = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPTS / name)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [name, *arguments])
    with pytest.raises(SystemExit) as stop:
        module.benchlib.main(module.run)
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def rows(output: str, first_cell: str) -> list:
    """The cells of the table rows whose first cell is ``first_cell``."""
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in output.splitlines()
            if line.startswith(f"| {first_cell} |")]


def test_ipi_benchmarks_run_and_the_three_ways_agree():
    output = run_script("bench_ipi.py", "--quick", "--threads", "1")
    for title in ("One rotation-averaged force evaluation through i-PI", "Time per inner step",
                  "per MD step as i-PI sees it"):
        assert title in output
    timings = rows(output, "1")[0]
    assert all(float(value) > 0 for value in timings[1:])
    agreement = {row[1]: float(row[2]) for row in rows(output, "1")[1:]}
    assert agreement["2i channel vs the 2i grid average in this process"] < 1e-5
    assert agreement["ffrotations vs the i-PI grid average in this process"] < 1e-4  # float32
    assert agreement["ffrotations batch vs ffrotations"] < 1e-4
    assert len(rows(output, "4")) == 2  # the MTS and overhead rows


def test_model_benchmarks_run_and_the_average_equals_the_loop(monkeypatch, capsys):
    status, output, errors = run_in_process("bench_model.py", ["--quick", "--no-retain-memory"],
                                            monkeypatch, capsys)
    assert status == 0, errors[-3000:]
    averaging = [row for row in rows(output, "4") if row[1] in ("2i", "3i")]
    assert [row[1] for row in averaging[:2]] == ["2i", "3i"]
    assert all(float(row[-1]) < 1e-4 for row in averaging[:2])  # max |ΔF| / max |F|, float32
    scaling = rows(output, "1")
    assert scaling and float(scaling[0][2]) > 0
    layouts = [row for row in rows(output, "4") if " / " in row[1]]
    assert len(layouts) == 1 and float(layouts[0][-1]) < 1e-4  # the layouts and attentions agree
    memory = [row for row in rows(output, "4") if row[2].endswith("MB")]
    budget, measured = float(memory[0][2].split()[0]), float(memory[0][6])
    assert 0 < measured <= budget


def test_data_benchmark_runs_and_reads_the_frames(monkeypatch, capsys):
    status, output, errors = run_in_process("bench_data.py", ["--quick"], monkeypatch, capsys)
    assert status == 0, errors[-3000:]
    (reading,) = rows(output, "20")
    assert float(reading[1]) > 0 and float(reading[2]) > 0


def test_a_bad_option_is_one_line_on_stderr(monkeypatch, capsys):
    status, _, errors = run_in_process("bench_model.py", ["--molecules", "0"], monkeypatch, capsys)
    assert status == 2
    assert errors.startswith("bench_model.py: error: --molecules must be positive")
    assert len(errors.strip().splitlines()) == 1
