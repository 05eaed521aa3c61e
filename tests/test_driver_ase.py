"""pet-driver with ASE's SocketIOCalculator as the server (the legacy STATUS/HAVEDATA message order,
no EXIT at the end), over a unix and an inet socket at once, on a general triclinic cell."""

import numpy as np
import pytest
from ase.calculators.socketio import SocketIOCalculator

from driver.ipi_input import free_port
from driver_processes import driver_command, log_text, processes, unique_name  # noqa: F401 (fixture)
from pet.calculator import PETCalculator


def test_ase_server_gets_the_calculators_numbers(processes, tiny_checkpoint, water_cell):
    name, port = unique_name("tase"), free_port("127.0.0.1")
    with SocketIOCalculator(unixsocket=name, timeout=60) as raw_server, \
            SocketIOCalculator(port=port, timeout=60) as averaged_server:
        driver = processes.start(driver_command(
            "--model", tiny_checkpoint, "--retry", "--channel", f"raw=unix:{name}",
            "--channel", f"2i=inet:127.0.0.1:{port}"), "driver.log")
        second = water_cell.copy()
        second.rattle(0.03, seed=5)
        for atoms in (water_cell, second):  # the cell is not in i-PI's upper-triangular form
            for server, grid in ((raw_server, None), (averaged_server, "2i")):
                via_socket = atoms.copy()
                via_socket.calc = server
                direct = atoms.copy()
                direct.calc = PETCalculator(tiny_checkpoint, grid=grid, dtype="float64")
                # ASE converts with CODATA Bohr and Hartree, the driver with i-PI's constants
                # (exact round trips with i-PI): they differ by ~1e-7 relative
                assert via_socket.get_potential_energy() == pytest.approx(
                    direct.get_potential_energy(), rel=1e-6)
                for quantity in ("get_forces", "get_stress"):
                    actual, reference = getattr(via_socket, quantity)(), getattr(direct, quantity)()
                    assert np.abs(actual - reference).max() < 1e-6 * np.abs(reference).max()
    # ASE closes the sockets without EXIT: a clean end
    assert processes.wait(driver, 30) == 0, log_text(driver)
    report = log_text(driver)
    assert "closed the connection between messages" in report and "Traceback" not in report
