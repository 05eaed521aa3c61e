"""pet-driver against the real i-PI server (the installed ``ipi`` package) over real sockets.

Runs are a few MD steps of a tiny random float64 model on 1-4 water molecules. Every process has a
timeout and is killed at the end of its test.
"""

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from driver import cli, runner
from driver.protocol import EV_PER_HARTREE
from driver_processes import (EV_PER_ANGSTROM_IN_AU, driver_command, ipi_command, ipi_orientation,
                              log_text, processes, read_first_frame, read_properties, unique_name,
                              wait_for, write_ipi_xyz)  # noqa: F401 (processes: a fixture)
from pet.calculator import PETCalculator
from pet.compilation import compile_problem

REPOSITORY = Path(__file__).resolve().parents[1]
TIMEOUT = 120

SOCKET = """<ffsocket name="{name}" mode="{mode}"><address>{address}</address>{port}
    <exit_on_disconnect>true</exit_on_disconnect>{options}</ffsocket>"""

MTS_XML = """<simulation verbosity="low" floatformat="%.16e">
  <output prefix="sim">
    <properties stride="1" filename="out">[step, potential, pot_component_raw(0), pot_component_raw(1), pot_component_raw(2)]</properties>
    <trajectory filename="f_raw" stride="1" format="bin">forces_component_raw(0)</trajectory>
    <trajectory filename="f_avg" stride="1" format="bin">forces_component_raw(1)</trajectory>
    <trajectory filename="symerr" stride="1" extra_type="energy_raw_ev, symmetry_error_energy_ev">extras_component_raw(1)</trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>7</seed></prng>
  {raw}
  {avg}
  {rnd}
  <system>
    <initialize nbeads="1">
      <file mode="xyz" units="angstrom">init.xyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces>
      <force forcefield="raw"><mts_weights>[-1, 1]</mts_weights></force>
      <force forcefield="2i"><mts_weights>[1, 0]</mts_weights></force>
      <force forcefield="random" weight="0"><mts_weights>[1, 0]</mts_weights></force>
    </forces>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">2.0</timestep>
        <nmts>[1, 10]</nmts>
        <thermostat mode="svr"><tau units="femtosecond">100</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""

SIMPLE_XML = """<simulation verbosity="low" floatformat="%.16e">
  <output prefix="sim">
    <properties stride="1" filename="out">[step, potential]</properties>
    <trajectory filename="f" stride="1" format="bin">forces</trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  {socket}
  <system>
    <initialize nbeads="{nbeads}">
      <file mode="xyz" units="angstrom">init.xyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="raw"/></forces>
    <motion mode="dynamics">
      <dynamics mode="nve"><timestep units="femtosecond">0.5</timestep></dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


def socket(name, address, mode="unix", port=None, options=""):
    return SOCKET.format(name=name, mode=mode, address=address, options=options,
                         port="" if port is None else f"<port>{port}</port>")


def requests_answered(driver_log: str) -> dict:
    """channel → (requests, structures) from the line the driver logs as each socket ends (which
    also gives the seconds in the model and connected: the model's share cannot exceed the whole)."""
    found = re.findall(r"channel (\S+) on \S+: (\d+) requests, (\d+) structures, ([0-9.]+) s in the model "
                       r"\([0-9.]+ ms per structure\), ([0-9.]+) s connected", driver_log)
    assert all(float(model) <= float(connected) for *_, model, connected in found)
    return {mode: (int(r), int(s)) for mode, r, s, _, _ in found}


def relative_error(actual, reference) -> float:
    return float(np.abs(np.asarray(actual) - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("options", [
    [], pytest.param(["--compile"], marks=pytest.mark.skipif(compile_problem("cpu") is not None,
                                                             reason="no C++ compiler for torch.compile"))],
    ids=["as-it-is", "compiled"])
def test_mts_run_matches_the_calculator(processes, tmp_path, tiny_checkpoint, water_cell, options):
    """A 3-step MTS run (raw [-1, 1], 2i [1, 0], random with weight 0 for output only), the driver
    started 2 s before i-PI: i-PI's first-frame forces and energies equal PETCalculator's, raw is
    evaluated once per position, the weight-0 channel only for output; also with the model's
    transformers compiled (pet-driver --compile)."""
    atoms = ipi_orientation(water_cell)  # a sheared triclinic cell: checks ASE cell = h transposed
    write_ipi_xyz(tmp_path / "init.xyz", [atoms])
    names = {mode: unique_name(f"t{mode}") for mode in ("raw", "2i", "random")}
    steps = 3
    (tmp_path / "input.xml").write_text(MTS_XML.format(
        steps=steps, raw=socket("raw", names["raw"]), avg=socket("2i", names["2i"]),
        rnd=socket("random", names["random"])))
    driver = processes.start(driver_command(
        "--model", tiny_checkpoint, "--retry", "--connect-timeout", 60, "--seed", 3, *options,
        *[f"--channel={mode}=unix:{name}" for mode, name in names.items()]), "driver.log")
    time.sleep(2.0)
    assert driver.poll() is None, log_text(driver)
    ipi = processes.start(ipi_command("input.xml"), "ipi.log")
    assert processes.wait(ipi, TIMEOUT) == 0, log_text(ipi)[-3000:]
    assert processes.wait(driver, 30) == 0, log_text(driver)
    report = log_text(driver)
    assert "Traceback" not in report

    # i-PI asks raw once per position (1 + 10 per outer step), not twice at outer steps
    counts = requests_answered(report)
    assert counts["raw"] == (1 + 10 * steps, 1 + 10 * steps)
    assert counts["2i"] == (1 + steps, 1 + steps)
    assert counts["random"][0] >= 1

    raw, averaged = atoms.copy(), atoms.copy()
    raw.calc = PETCalculator(tiny_checkpoint, dtype="float64")
    averaged.calc = PETCalculator(tiny_checkpoint, grid="2i", dtype="float64")
    forces_raw = read_first_frame(tmp_path / "sim.f_raw.bin") * EV_PER_ANGSTROM_IN_AU
    forces_avg = read_first_frame(tmp_path / "sim.f_avg.bin") * EV_PER_ANGSTROM_IN_AU
    assert relative_error(forces_raw, raw.get_forces()) < 1e-9
    assert relative_error(forces_avg, averaged.get_forces()) < 1e-9
    assert relative_error(forces_raw, averaged.get_forces()) > 1e-4  # the two channels differ

    out = read_properties(tmp_path / "sim.out")
    assert len(out["step"]) == steps + 1
    e_raw, e_avg = raw.get_potential_energy(), averaged.get_potential_energy()
    assert out["pot_component_raw(0)"][0] * EV_PER_HARTREE == pytest.approx(e_raw, rel=1e-6, abs=1e-6)
    assert out["pot_component_raw(1)"][0] * EV_PER_HARTREE == pytest.approx(e_avg, rel=1e-6, abs=1e-6)
    # the MTS potential is the averaged one; the weight-0 random channel is recorded, not used
    np.testing.assert_allclose(out["potential"], out["pot_component_raw(1)"], rtol=1e-12)
    assert np.all(out["pot_component_raw(2)"] != out["pot_component_raw(0)"])

    # extras of the averaged channel, as i-PI printed them
    symerr = [line.split() for line in (tmp_path / "sim.symerr").read_text().splitlines()
              if not line.lstrip().startswith("#")]
    energy_raw, error = map(float, symerr[0])
    assert energy_raw == pytest.approx(e_raw, rel=1e-9)
    assert error == pytest.approx(abs(e_avg - e_raw), abs=1e-6)


def two_frames(atoms):
    second = atoms.copy()
    second.rattle(0.05, seed=11)
    return [atoms, second]


def test_batched_requests_over_inet(processes, tmp_path, tiny_checkpoint, water_cell):
    """Two beads in one batched request (INIT announces batch_size:2), over TCP: one model call per
    request, and each bead's forces equal the calculator's on that bead."""
    from driver.ipi_input import free_port

    frames = two_frames(ipi_orientation(water_cell))
    write_ipi_xyz(tmp_path / "init.xyz", frames)
    port = free_port("127.0.0.1")
    (tmp_path / "input.xml").write_text(SIMPLE_XML.format(steps=1, nbeads=2, socket=socket(
        "raw", "127.0.0.1", mode="inet", port=port, options="<batch_size>2</batch_size>")))
    ipi = processes.start(ipi_command("input.xml"), "ipi.log")
    driver = processes.start(driver_command("--model", tiny_checkpoint, "--retry", "--channel",
                                            f"raw=inet:127.0.0.1:{port}"), "driver.log")
    assert processes.wait(ipi, TIMEOUT) == 0, log_text(ipi)[-3000:]
    assert processes.wait(driver, 30) == 0, log_text(driver)
    report = log_text(driver)
    assert "batch_size" in report
    assert requests_answered(report)["raw"] == (2, 4)
    for bead, atoms in enumerate(frames):
        atoms.calc = PETCalculator(tiny_checkpoint, dtype="float64")
        forces = read_first_frame(tmp_path / f"sim.f_{bead}.bin") * EV_PER_ANGSTROM_IN_AU
        assert relative_error(forces, atoms.get_forces()) < 1e-9


FFDIRECT = """<ffdirect name="{name}"><pes>custom</pes><pes_path>{path}</pes_path>
    <parameters>{{mode: {mode}, model: {model}}}</parameters><batch_size>2</batch_size></ffdirect>"""


def test_in_process_potential(processes, tmp_path, tiny_checkpoint, water_cell):
    """The model inside i-PI (<ffdirect> with <pes>custom</pes>), MTS raw + 2i, two beads in
    batches of two: the first-frame forces of both beads equal the calculator's."""
    frames = two_frames(ipi_orientation(water_cell))
    write_ipi_xyz(tmp_path / "init.xyz", frames)
    path = REPOSITORY / "driver" / "ipi_pes.py"
    xml = MTS_XML.format(steps=1, raw=FFDIRECT.format(name="raw", path=path, mode="raw", model=tiny_checkpoint),
                         avg=FFDIRECT.format(name="2i", path=path, mode="2i", model=tiny_checkpoint), rnd="")
    xml = xml.replace('<initialize nbeads="1">', '<initialize nbeads="2">')
    xml = "\n".join(line for line in xml.splitlines() if 'forcefield="random"' not in line)
    per_bead = "".join(
        f'<trajectory filename="{name}_{bead}" stride="1" format="bin">forces_component_raw({k};bead={bead})'
        "</trajectory>\n" for k, name in enumerate(["f_raw", "f_avg"]) for bead in (0, 1))
    xml = xml.replace("  </output>", per_bead + "  </output>")
    (tmp_path / "input.xml").write_text(xml.replace(", pot_component_raw(2)", ""))
    ipi = processes.start(ipi_command("input.xml"), "ipi.log")
    assert processes.wait(ipi, TIMEOUT) == 0, log_text(ipi)[-3000:]
    for grid, name in ((None, "f_raw"), ("2i", "f_avg")):
        for bead, atoms in enumerate(frames):
            atoms.calc = PETCalculator(tiny_checkpoint, grid=grid, dtype="float64")
            forces = read_first_frame(tmp_path / f"sim.{name}_{bead}.bin") * EV_PER_ANGSTROM_IN_AU
            assert relative_error(forces, atoms.get_forces()) < 1e-9


def test_ipi_dying_mid_run_ends_the_driver(processes, tmp_path, tiny_checkpoint):
    """Legacy message order (consolidate_messages false); i-PI killed after a few steps: the driver
    ends by itself, with a clear message and no traceback."""
    water = molecule("H2O")[[0, 1, 2]]
    water.cell = [30.0, 30.0, 30.0]
    write_ipi_xyz(tmp_path / "init.xyz", [water])
    name = unique_name("tkill")
    (tmp_path / "input.xml").write_text(SIMPLE_XML.format(steps=100000, nbeads=1, socket=socket(
        "raw", name, options="<consolidate_messages>false</consolidate_messages>")))
    ipi = processes.start(ipi_command("input.xml"), "ipi.log")
    driver = processes.start(driver_command("--model", tiny_checkpoint, "--retry", "--channel",
                                            f"raw=unix:{name}"), "driver.log")
    out = tmp_path / "sim.out"
    wait_for(lambda: out.is_file() and len(out.read_text().splitlines()) > 8, TIMEOUT, "MD steps")
    ipi.send_signal(signal.SIGKILL)
    processes.wait(ipi, 30)
    Path(f"/tmp/ipi_{name}").unlink()  # a killed i-PI leaves its socket file behind
    status = processes.wait(driver, 30)
    report = log_text(driver)
    # between messages: a clean end (0); in the middle of an exchange: an error (1)
    assert ("closed the connection" in report and status == 0) or \
        ("lost the connection to i-PI" in report and status == 1), report
    assert "Traceback" not in report


@pytest.mark.parametrize("case", ["atom count", "overlap"])
def test_structures_the_model_cannot_take(processes, tmp_path, tiny_checkpoint, case):
    """A wrong atom count, overlapping atoms: the driver says so in one line and exits 1; i-PI
    (exit_on_disconnect) stops too instead of waiting. (A template with an unknown species fails
    before connecting: test_a_template_with_elements_the_model_lacks_fails_before_connecting.)"""
    water = molecule("H2O")[[0, 1, 2]]
    water.cell = [30.0, 30.0, 30.0]
    template = tmp_path / "template.xyz"
    if case == "atom count":
        write_ipi_xyz(template, [water + water])
        expected = "i-PI sent 3 atoms but the template"
    else:
        water.positions[2] = water.positions[0] + [0.0, 0.0, 0.1]
        write_ipi_xyz(template, [water])
        expected = "atoms 0 and 2 overlap"
    write_ipi_xyz(tmp_path / "init.xyz", [water])
    name = unique_name("terr")
    (tmp_path / "input.xml").write_text(SIMPLE_XML.format(steps=5, nbeads=1, socket=socket("raw", name)))
    ipi = processes.start(ipi_command("input.xml"), "ipi.log")
    driver = processes.start(driver_command("--model", tiny_checkpoint, "--retry", "--template", template,
                                            "--channel", f"raw=unix:{name}"), "driver.log")
    assert processes.wait(driver, TIMEOUT) == 1
    report = log_text(driver)
    assert expected in report and "Traceback" not in report
    processes.wait(ipi, 60)  # raises if i-PI hangs


def test_command_line_errors(processes, tmp_path, tiny_checkpoint, capsys, caplog):
    """Usage mistakes exit 2, a missing model or an absent i-PI exit 1: one line, no traceback."""
    process = processes.start(driver_command("--model", tmp_path / "missing.pt"), "driver.log")
    assert processes.wait(process, 60) == 1
    assert log_text(process).splitlines() == [
        f"pet-driver: cannot load the model: no checkpoint file at {tmp_path / 'missing.pt'} "
        "(give one with --model PATH)"]

    for arguments, message in [
        (["--grid", "2x"], "bad channel mode '2x'"),
        (["--grid", "raw"], "--grid takes a rotation grid"),
        (["--channel", "raw=unix:a/b"], "bad address"),
        (["--channel", "raw"], "use MODE=ADDRESS"),
        (["--channel", "raw=unix:x", "--channel", "2i=unix:x"], "two channels on the same address"),
        (["--grid", "2i", "--channel", "raw=unix:x"], "either --grid or --channel"),
        (["--species", "Qq"], "bad species formula"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(arguments)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1, error

    absent = unique_name("none")
    assert cli.main(["--model", str(tiny_checkpoint), "--channel", f"raw=unix:{absent}"]) == 1
    assert f"is not reachable at unix:{absent}" in caplog.text and "use --retry" in caplog.text
    start = time.monotonic()
    assert cli.main(["--model", str(tiny_checkpoint), "--retry", "--connect-timeout", "1",
                     "--channel", f"2i=unix:{absent}"]) == 1
    assert "after trying for 1 s" in caplog.text and time.monotonic() - start < 10

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "--template FILE" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--seed", "-1", "--channel", "random=unix:x"], "argument --seed: must be a non-negative integer, got '-1'"),
    (["--seed", "1.5"], "argument --seed: must be a non-negative integer"),
    (["--grid", "1000"], "rotation grid '1000' is too large: N can be at most 20 (grid N has N(2N-1)² rotations"),
    (["--grid", "99999999999999999999"], "is too large: N can be at most 20"),
    (["--channel", "21i=unix:x"], "is too large: N can be at most 20"),
    (["--retry", "--connect-timeout", "nan"], "argument --connect-timeout: must be a finite number >= 0 s, got 'nan'"),
    (["--connect-timeout", "-5"], "argument --connect-timeout: must be a finite number >= 0 s, got '-5'"),
    (["--connect-timeout", "inf"], "got 'inf'"),
    (["--retry", "--channel", "raw=unix:" + "a" * 150], "is 159 bytes long, more than the 107 the OS allows"),
    (["--sockets-prefix", "/" + "d" * 100], "bad address 'unix:pet-raw': the socket file"),
    (["--threads", "1.5"], "argument --threads: must be a positive integer, got '1.5'"),
    (["--chunk-size", "0"], "argument --chunk-size: must be a positive integer, got '0'"),
    (["--max-memory", "inf"], "argument --max-memory: must be a finite number > 0 MB, got 'inf'"),
    (["--max-memory", "x"], "argument --max-memory: must be a finite number > 0 MB, got 'x'"),
    (["--template", "init.xyz", "--species", "OH2"], "give either --template or --species, not both"),
    (["--sockets-prefix", "/nowhere/s_"], "--sockets-prefix /nowhere/s_: there is no folder /nowhere for "
     "the socket file /nowhere/s_pet-raw (i-PI makes its socket files, not their folder): create it"),
])
def test_driver_rejects_bad_values_before_loading_the_model(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_says_to_use_the_cpu(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "torch sees no CUDA device on this machine: use --device cpu" in capsys.readouterr().err


def test_the_sockets_prefix_names_the_socket_files():
    args = cli.build_parser().parse_args(["--grid", "2i", "--sockets-prefix", "/scratch/run/s_"])
    assert [(str(a), a.path) for _, a in cli.channel_specs(args)] == [
        ("unix:pet-raw", "/scratch/run/s_pet-raw"), ("unix:pet-2i", "/scratch/run/s_pet-2i")]


def test_a_template_with_elements_the_model_lacks_fails_before_connecting(tmp_path, tiny_checkpoint, caplog):
    methane = molecule("CH4")
    methane.cell = [30.0, 30.0, 30.0]
    template = write_ipi_xyz(tmp_path / "methane.xyz", [methane])
    absent = unique_name("none")
    assert cli.main(["--model", str(tiny_checkpoint), "--template", str(template), "--retry",
                     "--channel", f"raw=unix:{absent}"]) == 1
    assert f"the template {template}: this model knows only H, O; the structure contains C" in caplog.text
    assert "not reachable" not in caplog.text


def test_help_works_with_a_blank_model_variable(monkeypatch, capsys):
    monkeypatch.setenv("PET_IPI_MODEL", "")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0 and "--model PATH" in capsys.readouterr().out


def test_species_the_model_lacks_are_a_usage_error(tiny_checkpoint, capsys):
    """--species NaCl: refused once the model is loaded (it knows H and O), before connecting."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", str(tiny_checkpoint), "--species", "NaCl", "--channel", "raw=unix:x"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("pet-driver: error: argument --species: the repeating unit NaCl: this model "
                            "knows only H, O; the unit contains Na, Cl") and error.count("\n") == 1, error


def test_ctrl_c_while_waiting_for_ipi_ends_at_once(processes, tiny_checkpoint):
    """--retry with no i-PI yet: Ctrl-C ends the wait at once (it lasted the driver's stop time)."""
    driver = processes.start(driver_command("--model", tiny_checkpoint, "--retry", "--channel",
                                            f"raw=unix:{unique_name('twait')}"), "driver.log")
    wait_for(lambda: "model " in log_text(driver), TIMEOUT, "the model loaded")
    time.sleep(0.5)
    start = time.monotonic()
    driver.send_signal(signal.SIGINT)
    assert processes.wait(driver, 60) == 130, log_text(driver)
    assert time.monotonic() - start < runner.STOP_SECONDS / 2, log_text(driver)
    assert "interrupted" in log_text(driver) and "Traceback" not in log_text(driver)


def test_ctrl_c_while_starting_is_one_line(monkeypatch, capsys):
    """An interrupt before the sockets are served (here: while the allocator is set up) ends
    pet-driver with one line and status 130, not a traceback."""
    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "retain_freed_memory", interrupt)
    assert cli.main(["--channel", "raw=unix:x"]) == 130
    assert capsys.readouterr().err == "pet-driver: interrupted\n"


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM, signal.SIGTERM]], ids=["ctrl-c", "two-sigterms"])
def test_ctrl_c_during_a_long_evaluation_ends_with_130(processes, tmp_path, tiny_checkpoint, signals):
    """SIGINT (or SIGTERM twice, the second during the clean-up) while a socket thread is inside a
    model call that outlasts the driver's stop time (grid 20 on two molecules, several seconds):
    status 130 after that time. (Python's exit under a thread still in torch aborted: status -6,
    "terminate called without an active exception".)"""
    waters = molecule("H2O") + molecule("H2O")
    waters.positions[3:] += [2.9, 0.0, 0.0]
    waters.cell = [30.0, 30.0, 30.0]
    write_ipi_xyz(tmp_path / "init.xyz", [waters])
    name = unique_name("tlong")
    (tmp_path / "input.xml").write_text(SIMPLE_XML.format(steps=5, nbeads=1, socket=socket("raw", name)))
    ipi = processes.start(ipi_command("input.xml"), "ipi.log")
    driver = processes.start(driver_command("--model", tiny_checkpoint, "--retry", "--threads", 1,
                                            "--channel", f"20=unix:{name}"), "driver.log")
    wait_for(lambda: "INIT" in log_text(driver), TIMEOUT, "INIT")
    time.sleep(0.5)
    start = time.monotonic()
    for sig in signals:
        driver.send_signal(sig)
        time.sleep(0.2)
    assert processes.wait(driver, 60) == 130, log_text(driver)
    assert time.monotonic() - start < runner.STOP_SECONDS + 5
    assert "interrupted: closing the sockets" in log_text(driver)
    assert "Traceback" not in log_text(driver) and "terminate called" not in log_text(driver)
    processes.close()  # i-PI still waits for the forces
    Path(f"/tmp/ipi_{name}").unlink(missing_ok=True)


def test_help_explains_device_and_dtype(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--device {cpu,cuda} where the model runs" in text and "--dtype {float32,float64} floating-point" in text
    assert "--sockets-prefix PREFIX" in text
