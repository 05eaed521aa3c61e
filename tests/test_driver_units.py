"""The driver's pieces in-process: unit conversion, addresses, INIT strings, species, channels."""

import json

import numpy as np
import pytest
from ase.build import molecule
from ipi.utils.units import unit_to_internal

from driver.channels import OVERLAP_DISTANCE, Channel, StructureError, parse_mode
from driver.protocol import (ANGSTROM_PER_BOHR, EV_PER_HARTREE, SOCKETS_PREFIX, UNIX_PATH_MAX, Address,
                             Answer, answer_to_ipi, parse_init, structure_from_ipi)
from driver.species import Species, SpeciesError
from pet.calculator import PETCalculator


def test_units_round_trip_with_ipis_constants():
    positions = np.array([[1.25, -3.5, 7.125], [0.1, 0.2, 0.3]])
    cell = np.array([[5.0, 0.0, 0.0], [1.0, 6.0, 0.0], [0.5, -0.25, 7.0]])  # rows = lattice vectors
    bohr = unit_to_internal("length", "angstrom", 1.0)
    h = cell.T * bohr  # i-PI: lattice vectors as columns
    structure = structure_from_ipi(h, (positions * bohr).ravel())
    np.testing.assert_allclose(structure.positions, positions, rtol=1e-15)
    np.testing.assert_allclose(structure.cell, cell, rtol=1e-15, atol=1e-15)

    virial = np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    energy, forces, sent_virial, extras = answer_to_ipi(Answer(-2.5, np.ones((2, 3)), virial, {"a": 1}))
    hartree = unit_to_internal("energy", "electronvolt", 1.0)
    assert energy == pytest.approx(-2.5 * hartree, rel=1e-15)
    np.testing.assert_allclose(forces, hartree / bohr, rtol=1e-15)
    np.testing.assert_allclose(sent_virial, 0.5 * (virial + virial.T) * hartree, rtol=1e-15)
    assert json.loads(extras) == {"a": 1}
    assert ANGSTROM_PER_BOHR * bohr == pytest.approx(1.0, rel=1e-15)
    assert EV_PER_HARTREE * hartree == pytest.approx(1.0, rel=1e-15)


def test_addresses():
    assert Address.parse("unix:pet-2i") == Address("unix", "pet-2i")
    assert Address.parse("unix:pet-2i").path == "/tmp/ipi_pet-2i"
    assert Address.parse("inet:node12:31415") == Address("inet", "node12", 31415)
    assert str(Address.parse("inet:127.0.0.1:8000")) == "inet:127.0.0.1:8000"
    for bad in ["pet-2i", "unix:", "unix:a/b", "inet:host", "inet:host:0", "inet:host:99999", "tcp:h:1"]:
        with pytest.raises(ValueError, match="bad address"):
            Address.parse(bad)


def test_unix_addresses_carry_the_sockets_prefix_and_must_fit_the_os_limit():
    assert Address.parse("unix:md", prefix="/scratch/run/s_").path == "/scratch/run/s_md"
    assert str(Address.parse("unix:md", prefix="/scratch/run/s_")) == "unix:md"
    longest = "x" * (UNIX_PATH_MAX - len(SOCKETS_PREFIX))
    assert Address.parse(f"unix:{longest}").path == SOCKETS_PREFIX + longest
    with pytest.raises(ValueError, match=r"bad address .* is 108 bytes long, more than the 107 the OS allows"):
        Address.parse(f"unix:{longest}x")
    with pytest.raises(ValueError, match="more than the 107"):
        Address.parse("unix:md", prefix="/" + "p" * 110)


def test_init_strings():
    # i-PI: "<parameters>" as " k : v , " then ", batch_size:N"; ASE sends one NUL byte
    assert parse_init(" mode : 2i , species : OH2 , , batch_size:4") == {
        "mode": "2i", "species": "OH2", "batch_size": "4"}
    assert parse_init(" batch_size:2") == {"batch_size": "2"}
    assert parse_init("\x00") == {}
    assert parse_init(" ") == {}


def test_modes():
    assert [parse_mode(m) for m in ["raw", "random", "2i", " 3 "]] == ["raw", "random", "2i", "3"]
    with pytest.raises(ValueError, match="bad channel mode"):
        parse_mode("2x")
    assert parse_mode("20i") == "20i"
    with pytest.raises(ValueError, match="rotation grid '21' is too large: N can be at most 20"):
        parse_mode("21")


def test_species(tmp_path):
    assert Species.repeating("OH2").numbers(6).tolist() == [8, 1, 1, 8, 1, 1]
    with pytest.raises(SpeciesError, match="not a multiple of the 3 atoms"):
        Species.repeating().numbers(4)
    with pytest.raises(SpeciesError, match="bad species formula"):
        Species.repeating("Xy")
    path = tmp_path / "t.xyz"
    path.write_text("3\n# CELL(abcABC): 10 10 10 90 90 90 positions{angstrom}\nC 0 0 0\nO 1 0 0\nH 0 1 0\n")
    assert Species.from_template(path).numbers(3).tolist() == [6, 8, 1]
    with pytest.raises(SpeciesError, match="i-PI sent 6 atoms but the template .* has 3"):
        Species.from_template(path).numbers(6)
    with pytest.raises(SpeciesError, match="no template file"):
        Species.from_template(tmp_path / "missing.xyz")



def test_species_errors_give_short_formulas():
    """A 192-atom template in an atom-count error is H128O64, not 192 letters."""
    bulk = Species(np.tile([8, 1, 1], 64), exact=True, source="the template water-64.xyz")
    with pytest.raises(SpeciesError) as error:
        bulk.numbers(3)
    assert str(error.value) == "i-PI sent 3 atoms but the template water-64.xyz has 192 (H128O64)"


def test_species_are_checked_against_the_model_species():
    Species.repeating("OH2").check_known([1, 8])
    with pytest.raises(SpeciesError, match="^the repeating unit NaCl: this model knows only H, O; "
                                           "the unit contains Na, Cl$"):
        Species.repeating("NaCl").check_known([8, 1])
    with pytest.raises(SpeciesError, match="^the template t.xyz: this model knows only H, O; the "
                                           "structure contains C$"):
        Species([6, 1, 1, 1, 1], exact=True, source="the template t.xyz").check_known([1, 8])

def _structure(atoms):
    return structure_from_ipi(np.asarray(atoms.cell).T / ANGSTROM_PER_BOHR,
                              atoms.positions / ANGSTROM_PER_BOHR)


def test_grid_channel_answers_and_extras(tiny_model, water_cell):
    channel = Channel(tiny_model, "2i")
    numbers = water_cell.numbers
    (answer,) = channel.evaluate(numbers, [_structure(water_cell)])
    water_cell.calc = PETCalculator(tiny_model, grid="2i", dtype="float64")
    assert answer.energy == pytest.approx(water_cell.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(answer.forces, water_cell.get_forces(), atol=1e-10)
    np.testing.assert_allclose(answer.virial, water_cell.calc.results["virial"], atol=1e-10)
    raw = water_cell.copy()
    raw.calc = PETCalculator(tiny_model, dtype="float64")
    extras = answer.extras
    assert extras["channel"] == "2i" and extras["rotations"] == 36
    assert extras["energy_raw_ev"] == pytest.approx(raw.get_potential_energy(), rel=1e-12)
    assert extras["symmetry_error_energy_ev"] == pytest.approx(
        abs(answer.energy - raw.get_potential_energy()), abs=1e-9)
    assert extras["symmetry_error_forces_ev_per_ang"] == pytest.approx(
        np.abs(answer.forces - raw.get_forces()).mean(), abs=1e-10)
    assert extras["symmetry_error_forces_ev_per_ang"] > 0
    assert channel.requests == 1 and channel.structures == 1


def test_batched_evaluation_equals_single(tiny_model, water_cell):
    channel = Channel(tiny_model, "raw")
    second = water_cell.copy()
    second.rattle(0.05, seed=3)
    batch = channel.evaluate(water_cell.numbers, [_structure(water_cell), _structure(second)])
    for atoms, answer in zip([water_cell, second], batch):
        (single,) = channel.evaluate(atoms.numbers, [_structure(atoms)])
        assert answer.energy == pytest.approx(single.energy, rel=1e-13)
        np.testing.assert_allclose(answer.forces, single.forces, atol=1e-12)
        assert set(answer.extras) == {"channel", "virial_antisymmetry_ev"}


def test_random_channel_is_seeded(tiny_model, water_cell):
    first = Channel(tiny_model, "random", seed=5).evaluate(water_cell.numbers, [_structure(water_cell)])
    again = Channel(tiny_model, "random", seed=5).evaluate(water_cell.numbers, [_structure(water_cell)])
    raw = Channel(tiny_model, "raw").evaluate(water_cell.numbers, [_structure(water_cell)])
    assert first[0].energy == again[0].energy
    assert first[0].energy != pytest.approx(raw[0].energy, rel=1e-9)


def test_bad_structures_give_clear_errors(tiny_model):
    channel = Channel(tiny_model, "raw")
    water = molecule("H2O")[[0, 1, 2]]
    numbers = water.numbers
    nan = water.positions.copy()
    nan[1, 0] = np.nan
    with pytest.raises(StructureError, match="NaN or infinite"):
        channel.evaluate(numbers, [structure_from_ipi(np.zeros((3, 3)), nan / ANGSTROM_PER_BOHR)])
    close = water.positions.copy()
    close[2] = close[0] + [0.0, 0.0, 0.5 * OVERLAP_DISTANCE]
    with pytest.raises(StructureError, match="atoms 0 and 2 overlap"):
        channel.evaluate(numbers, [structure_from_ipi(np.zeros((3, 3)), close / ANGSTROM_PER_BOHR)])
    with pytest.raises(StructureError, match="empty structure"):
        channel.evaluate(np.zeros(0, int), [structure_from_ipi(np.zeros((3, 3)), np.zeros(0))])
    with pytest.raises(StructureError, match="knows only H, O; the structure contains C"):
        channel.check_species(np.array([6, 1, 1]))
