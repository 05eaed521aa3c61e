"""``pet-train CONFIG.yaml``: train PET on energies and forces with rotational augmentation.

The protocol of the paper (DESIGN.md section 3): Adam without weight decay, a one-cycle learning
rate (a warm-up, a high rate, then a sharp cosine drop; :mod:`pet.schedule`), loss
w_E · MSE(E per atom)/σ_E² + w_F · MSE(F)/σ_F² (σ from the training set), a new random proper or
improper rotation of every structure at every epoch, the best checkpoint by validation force MAE,
early stopping, periodic checkpoints and automatic resume from ``OUTPUT/last.pt``.
``force_only_epochs``: train on forces alone for that many epochs first; with the energy term
from the start, a small model stays for epochs on a plateau where it predicts zero forces.
Optional: a symmetry-consistency term penalising the difference of predictions for two random
rotations of the same structure (``symmetry_weight``, off by default); an exponential moving
average of the weights (``ema_decay``, off by default), which is then what is validated and saved
as best.pt (last.pt keeps the optimiser's weights and the average, to resume).
"""

import contextlib
import copy
import json
import logging
import math
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import yaml
from ase.data import chemical_symbols

from grids.quadrature import random_rotation

from . import checkpoint
from .arguments import OneLineParser
from .calculator import parse_device, resolve_device, resolve_dtype
from .compute import compute
from .data import DataError, default_dataset, environment_dataset, read_frames, split_indices
from .hypers import PETHypers
from .model import PET
from .neighbors import batch_graphs, graph_from_atoms
from .output_paths import writable_folder
from .rules import (BOOLEAN, NON_NEGATIVE_NUMBER, PATH, POSITIVE_INTEGER, POSITIVE_NUMBER, Rule,
                    as_number, choice, integer, nullable, number)
from .schedule import OneCycle

DEFAULTS = {
    "model": {},
    "data": {"path": None, "max_frames": None, "fractions": [0.9, 0.05, 0.05], "seed": 0},
    "training": {
        "epochs": 100, "batch_size": 4, "learning_rate": 1e-3, "warmup_fraction": 0.05,
        "final_lr_ratio": 1e-3, "energy_weight": 0.01, "force_weight": 1.0, "force_only_epochs": 0,
        "augment": True,
        "symmetry_weight": 0.0, "patience": None, "seed": 0, "device": "cpu", "dtype": "float32",
        "threads": None, "validate_every": 1, "max_hours": None, "init_from": None, "ema_decay": None,
    },
    "output": "runs/train",
}

log = logging.getLogger("pet.train")

PROGRESS_EVERY = 100
"""Batches between two progress lines inside an epoch."""


RUNTIME_KEYS = ("device", "threads", "validate_every", "max_hours", "patience")
"""Training keys that say where, how fast and how long to run, not what is trained: a resumed run
may change them."""

RESUME_STATE = ("optimizer", "scheduler", "rng", "torch_rng", "since_best")
"""What last.pt holds besides the weights, to resume."""


class ConfigError(ValueError):
    """An invalid training configuration."""


class DuplicateKey(yaml.YAMLError):
    """A key that one YAML mapping gives twice (PyYAML would keep the last silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a mapping with a repeated key (:class:`DuplicateKey`);
    YAML merge keys (``<<: *defaults``) still merge, the mapping's own keys overriding them."""

    def construct_mapping(self, node, deep=False):
        first_line = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise DuplicateKey(f"'{key}' is given twice in one mapping (lines {first_line[key]} "
                                       f"and {line}; only the last would count): give it once")
            except TypeError:  # an unhashable key: the safe loader's own error follows
                continue
            first_line[key] = line
        return super().construct_mapping(node, deep)


def _split_fractions(value) -> list:
    """``value`` as three positive numbers (train, validation, test) summing to 1."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"not three numbers: {value!r}")
    fractions = [as_number(x) for x in value]
    if min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"not positive, summing to 1: {fractions}")
    return fractions


MODEL_RULES = {field.name: POSITIVE_NUMBER if field.type is float else POSITIVE_INTEGER
               for field in fields(PETHypers)}
"""The ``model`` section: PET's hypers (pet.hypers.PETHypers), lengths in Å."""

DATA_RULES = {
    "path": nullable(PATH, "the default data set"),
    "max_frames": nullable(integer(3), "all frames"),
    "fractions": Rule("three positive numbers summing to 1, e.g. [0.9, 0.05, 0.05]", _split_fractions),
    "seed": integer(0),
}

TRAINING_RULES = {
    "epochs": POSITIVE_INTEGER,
    "batch_size": POSITIVE_INTEGER,
    "learning_rate": POSITIVE_NUMBER,
    "warmup_fraction": number("a number in [0, 1]", lambda x: 0 <= x <= 1),
    "final_lr_ratio": number("a number in (0, 1]", lambda x: 0 < x <= 1),
    "energy_weight": NON_NEGATIVE_NUMBER,
    "force_weight": NON_NEGATIVE_NUMBER,
    "force_only_epochs": integer(0),
    "augment": BOOLEAN,
    "symmetry_weight": NON_NEGATIVE_NUMBER,
    "patience": nullable(POSITIVE_INTEGER, "no early stop"),
    "seed": integer(0),
    "device": Rule("cpu, cuda or cuda:N", parse_device),
    "dtype": choice("float32", "float64"),
    "threads": nullable(POSITIVE_INTEGER, "torch's default"),
    "validate_every": POSITIVE_INTEGER,
    "max_hours": nullable(POSITIVE_NUMBER, "no limit"),
    "init_from": nullable(PATH, "new weights"),
    "ema_decay": nullable(number("a number in [0, 1)", lambda x: 0 <= x < 1), "off"),
}

SECTION_RULES = {"model": MODEL_RULES, "data": DATA_RULES, "training": TRAINING_RULES}


INPUT_PATHS = (("data", "path"), ("training", "init_from"))
"""Config keys naming files to read: a relative path is taken from the config file's folder."""


def load_config(path, output: Optional[str] = None) -> dict:
    """The YAML config at ``path`` merged over :data:`DEFAULTS` and checked (:func:`merge_config`),
    relative :data:`INPUT_PATHS` taken from the config file's folder; ``output`` (pet-train's
    --output) replaces its output directory. ConfigError naming the file if it is not UTF-8 text,
    not valid YAML, repeats a key (:class:`UniqueKeyLoader`) or is empty (only comments)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    try:
        user = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not a text (YAML) file: byte {error.start} is not UTF-8") from None
    except DuplicateKey as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if user is None:
        raise ConfigError(f"{path} is empty (no keys, only comments or blank lines): give at least "
                          "the keys that differ from the defaults, e.g. 'output: runs/NAME' (the "
                          "defaults alone train the paper's large model)")
    return merge_config(user, source=str(path), output=output, folder=path.parent)


def merge_config(user: dict, source: str = "config", output: Optional[str] = None,
                 folder: Optional[Path] = None) -> dict:
    """``user`` (a config as read from YAML) merged over :data:`DEFAULTS`, every key checked
    against :data:`SECTION_RULES`: an unknown key or a value of the wrong type or range is a
    one-line :class:`ConfigError` that names it and says what it allows. Numbers written as 1e-3
    (strings to PyYAML) are read as numbers. ``~`` is expanded in every path; a relative
    :data:`INPUT_PATHS` value is taken from ``folder`` (the config file's; None: the current
    directory), the output directory from the current directory. ``output`` (--output) replaces
    the config's output. Nothing is read from disk here (see :func:`check_environment`)."""
    _check_sections(user, source)
    config = {"model": dict(user.get("model") or {})}
    for section in ("data", "training"):
        config[section] = {**DEFAULTS[section], **(user.get(section) or {})}
    for section in SECTION_RULES:
        config[section] = _checked_section(config[section], section, source)
    for section, key in INPUT_PATHS:
        config[section][key] = _located(config[section][key], folder)
    config["output"] = str(Path(_checked_output(output or user.get("output", DEFAULTS["output"]), source,
                                                from_option=bool(output))).expanduser())
    try:
        PETHypers.from_dict(config["model"])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: model: {error}") from None
    _check_training(config["training"], source)
    return config


def _located(path: Optional[str], folder: Optional[Path]) -> Optional[str]:
    """``path`` with ``~`` expanded and, if relative, taken from ``folder`` (made absolute);
    as it is if None or ``folder`` is None (relative to the current directory)."""
    if path is None:
        return None
    expanded = Path(path).expanduser()
    if folder is None or expanded.is_absolute():
        return str(expanded)
    return str((folder / expanded).resolve())


def _check_training(training: dict, source: str) -> None:
    """ConfigError for training keys that contradict each other."""
    if training["energy_weight"] == training["force_weight"] == 0:
        raise ConfigError(f"{source}: training: energy_weight and force_weight are both 0: nothing to fit")
    if training["force_only_epochs"] >= training["epochs"]:
        raise ConfigError(f"{source}: training: force_only_epochs must be smaller than epochs "
                          f"({training['epochs']}): the energy term would never be trained, got "
                          f"{training['force_only_epochs']} (to fit forces alone: energy_weight 0 "
                          "and force_only_epochs 0)")


def _check_sections(user, source: str) -> None:
    """ConfigError unless ``user`` is a mapping of known sections, each a mapping (or empty)."""
    if not isinstance(user, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    unknown = sorted(set(user) - set(DEFAULTS), key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; known: {sorted(DEFAULTS)}")
    for section in SECTION_RULES:
        if not isinstance(user.get(section) or {}, dict):
            raise ConfigError(f"{source}: '{section}' must be a mapping of keys to values, "
                              f"got {user[section]!r}")


def _checked_section(values: dict, section: str, source: str) -> dict:
    """``values`` of ``section`` with every key checked and converted by its rule
    (:data:`SECTION_RULES`); ConfigError at the first unknown key or bad value."""
    rules = SECTION_RULES[section]
    unknown = sorted(set(values) - set(rules), key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in '{section}'; known: {sorted(rules)}")
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = rules[key].check(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {section}: {key} must be {rules[key].allowed}, "
                              f"got {value!r}") from None
    return checked


def _checked_output(value, source: str, from_option: bool) -> str:
    """The output directory as text (``from_option``: given as --output); ConfigError if there is
    none or it is not a path."""
    if value is None:
        raise ConfigError(f"{source}: output is null: give the output directory in the config "
                          "('output: DIR') or with --output DIR")
    try:
        return PATH.check(value)
    except ValueError:
        where = "--output" if from_option else f"{source}: output"
        raise ConfigError(f"{where} must be the output directory, {PATH.allowed}, got {value!r}") from None


def check_environment(config: dict) -> None:
    """ConfigError unless the files ``config`` names exist and its device is there: the data file
    (null: $PET_IPI_DATA, if set), the ``init_from`` checkpoint, the CUDA device. Checked before
    any data is read."""
    data = config["data"]["path"]
    if data is not None and not Path(data).is_file():
        raise ConfigError(f"data: path: no data file at {data}")
    if data is None:
        chosen = environment_dataset()
        if chosen is not None and not chosen.is_file():
            raise ConfigError(f"data: path is null and PET_IPI_DATA names no data file: {chosen}")
    start = config["training"]["init_from"]
    if start is not None and not Path(start).is_file():
        raise ConfigError(f"training: init_from: no checkpoint file at {start}")
    try:
        resolve_device(config["training"]["device"])
    except ValueError as error:
        raise ConfigError(f"training: {error}") from None


def make_output_directory(output) -> Path:
    """The output directory ``output``, created if needed; ConfigError if it cannot be or is not
    writable."""
    try:
        return writable_folder(Path(output).expanduser(), "output")
    except ValueError as error:
        raise ConfigError(str(error)) from None


def with_absolute_paths(config: dict) -> dict:
    """A copy of ``config`` whose output, data path and init_from are absolute (as recorded)."""
    config = copy.deepcopy(config)
    config["output"] = str(Path(config["output"]).expanduser().resolve())
    for section, key in INPUT_PATHS:
        if config[section].get(key) is not None:
            config[section][key] = str(Path(config[section][key]).expanduser().resolve())
    return config


def resume_view(config: dict) -> dict:
    """What must not change when a run resumes: ``config`` with absolute paths, the model's full
    hypers and no :data:`RUNTIME_KEYS`."""
    config = with_absolute_paths(config)
    config["model"] = PETHypers.from_dict(config.get("model") or {}).to_dict()
    config["training"] = {k: v for k, v in config["training"].items() if k not in RUNTIME_KEYS}
    return config


def differing_keys(first: dict, second: dict) -> List[str]:
    """The keys ("section: key", or "section") whose values differ between two configs; a key
    absent from one counts as null there."""
    keys = []
    for section in sorted(set(first) | set(second)):
        a, b = first.get(section), second.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{section}: {key}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
        elif a != b:
            keys.append(section)
    return keys


class WeightAverage:
    """Exponential moving average of a model's parameters: after each optimiser step
    θ̄ ← d θ̄ + (1 - d) θ, for ``decay`` d (0.999: an average over the last ~1000 steps).

    With batches of one structure the weights the optimiser ends at are noisy; their average
    usually validates better. Use :meth:`applied` to validate or save with the average."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block, its own weights again after it."""
        own = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            for p, a in zip(self.parameters, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(self.parameters, own):
                    p.copy_(o)

    def state_dict(self) -> list:
        return [a.clone() for a in self.average]

    def load_state_dict(self, average: list) -> None:
        with torch.no_grad():
            for a, stored in zip(self.average, average):
                a.copy_(stored)


def fit_baseline(frames, species) -> np.ndarray:
    """Per-species energies (eV) minimising Σ (E - Σ_s n_s b_s)² over ``frames`` (min-norm)."""
    counts = np.array([[np.sum(a.numbers == z) for z in species] for a in frames], dtype=float)
    energies = np.array([a.get_potential_energy() for a in frames])
    return np.linalg.lstsq(counts, energies, rcond=None)[0]


def refit_baseline(model, dataset, n_frames=100, batch_size=4) -> np.ndarray:
    """Shift ``model.baseline`` (eV per atom of each species) by the least-squares solution of
    Σ_s n_s Δb_s = E_ref - E_model over the first ``n_frames`` of ``dataset``; return the shift.

    The network and the forces are unchanged. Used when the energy term is switched on after
    force-only epochs: the forces do not fix the energy zero, and an offset of ~1 eV/atom would
    dominate the first energy gradients.
    """
    species = model.species
    counts, residual = [], []
    with torch.no_grad():
        for start in range(0, min(n_frames, len(dataset)), batch_size):
            graph, energy, _ = dataset.batch(range(start, min(start + batch_size, n_frames, len(dataset))))
            predicted = compute(model, graph, forces=False, virial=False).energy
            residual.extend((energy.double().cpu() - predicted.double().cpu()).tolist())
            numbers = graph.numbers.cpu()
            for s in range(graph.n_structures):
                mine = numbers[graph.structure.cpu() == s]
                counts.append([int((mine == z).sum()) for z in species])
        shift = np.linalg.lstsq(np.array(counts, float), np.array(residual), rcond=None)[0]
        model.baseline += torch.as_tensor(shift, dtype=model.baseline.dtype, device=model.baseline.device)
    return shift


class Dataset:
    """Frames as graphs plus their targets, on the training device and dtype."""

    def __init__(self, frames, cutoff, device, dtype):
        self.graphs = [graph_from_atoms(a, cutoff).to(device, dtype) for a in frames]
        self.energy = [torch.tensor(a.get_potential_energy(), dtype=dtype, device=device) for a in frames]
        self.forces = [torch.as_tensor(a.get_forces(), dtype=dtype, device=device) for a in frames]

    def __len__(self):
        return len(self.graphs)

    def batch(self, indices):
        graph = batch_graphs([self.graphs[i] for i in indices])
        energy = torch.stack([self.energy[i] for i in indices])
        forces = torch.cat([self.forces[i] for i in indices])
        return graph, energy, forces


def _random_rotations(rng, n, dtype, device):
    return torch.as_tensor(np.stack([random_rotation(rng) for _ in range(n)]), dtype=dtype,
                           device=device)[None]


def evaluate_errors(model, dataset, batch_size=4) -> dict:
    """MAE and RMSE of energy (meV/atom) and forces (meV/Å) of the raw model on ``dataset``."""
    energy_errors, force_errors = [], []
    for start in range(0, len(dataset), batch_size):
        graph, energy, forces = dataset.batch(range(start, min(start + batch_size, len(dataset))))
        result = compute(model, graph, virial=False)
        n_atoms = torch.bincount(graph.structure, minlength=graph.n_structures)
        energy_errors.append(((result.energy - energy) / n_atoms).detach().cpu().double())
        force_errors.append((result.forces - forces).detach().cpu().double().reshape(-1))
    e, f = torch.cat(energy_errors) * 1000, torch.cat(force_errors) * 1000
    return {"energy_mae": float(e.abs().mean()), "energy_rmse": float(e.pow(2).mean().sqrt()),
            "force_mae": float(f.abs().mean()), "force_rmse": float(f.pow(2).mean().sqrt())}


class Trainer:
    """One training run: data, model, optimiser, schedule, checkpoints under ``output``."""

    def __init__(self, config: dict, restart: bool = False):
        check_environment(config)
        self.config = config
        train = config["training"]
        self.output = make_output_directory(config["output"])
        last = self.output / "last.pt"
        resumed = self._resumable(last) if last.is_file() and not restart else None
        self.device = train["device"]
        self.dtype = resolve_dtype(train["dtype"])
        if train["threads"]:
            torch.set_num_threads(int(train["threads"]))
        torch.manual_seed(train["seed"])
        self.rng = np.random.default_rng(train["seed"])
        self.hypers = PETHypers.from_dict(config["model"])

        data = config["data"]
        path = (Path(data["path"]) if data["path"] else default_dataset()).resolve()
        frames = read_frames(path)[: data["max_frames"]]
        self.split = split_indices(len(frames), data["fractions"], data["seed"])
        self.split["path"] = str(path)
        species = sorted({int(z) for a in frames for z in a.numbers})
        log.info("data: %d frames from %s, species %s; split %d / %d / %d (seed %d)", len(frames),
                 path, ", ".join(chemical_symbols[z] for z in species), len(self.split["train"]),
                 len(self.split["validation"]), len(self.split["test"]), data["seed"])
        train_frames = [frames[i] for i in self.split["train"]]

        self.model = PET(self.hypers, species)
        for layer in self.model.layers:  # start from E = baseline, F = 0
            for head in (layer.central_head, layer.bond_head):
                torch.nn.init.zeros_(head[-1].weight)
                torch.nn.init.zeros_(head[-1].bias)
        baseline = fit_baseline(train_frames, species)
        residual = np.array([(a.get_potential_energy() - baseline[np.searchsorted(species, a.numbers)].sum())
                             / len(a) for a in train_frames])
        forces = np.concatenate([a.get_forces().ravel() for a in train_frames])
        self.sigma_energy = float(max(residual.std(), 1e-3))
        self.sigma_forces = float(forces.std())
        self.model.baseline.copy_(torch.as_tensor(baseline))
        self.model.energy_scale.fill_(self.sigma_forces)
        if train["init_from"]:
            self._initialise_from(Path(train["init_from"]))
        self.model.to(self.device, self.dtype)

        log.info("building neighbour lists ...")
        self.train_set = Dataset(train_frames, self.hypers.cutoff, self.device, self.dtype)
        self.validation_set = Dataset([frames[i] for i in self.split["validation"]],
                                      self.hypers.cutoff, self.device, self.dtype)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train["learning_rate"])
        total_steps = train["epochs"] * math.ceil(len(self.train_set) / train["batch_size"])
        self.scheduler = OneCycle(self.optimizer, train["learning_rate"], total_steps,
                                  train["warmup_fraction"], train["final_lr_ratio"])
        decay = train["ema_decay"]
        self.average = WeightAverage(self.model, decay) if decay is not None else None
        self.epoch, self.best, self.since_best, self.history = 0, math.inf, 0, []
        if resumed is not None:
            self._resume(resumed, last)

    def _metadata(self) -> dict:
        return {"config": with_absolute_paths(self.config), "epoch": self.epoch,
                "best_validation_force_mae": self.best, "sigma_energy": self.sigma_energy, "sigma_forces": self.sigma_forces,
                "history": self.history, "torch": str(torch.__version__)}

    def _initialise_from(self, path):
        """Start from the weights, baseline and energy scale of the checkpoint at ``path`` (same
        hypers and species; its split must be this run's, so that no test frame was trained on)."""
        stored = checkpoint.read(path)
        if stored["hypers"] != self.hypers.to_dict() or stored["species"] != self.model.species:
            raise ConfigError(f"init_from {path}: its model (hypers {stored['hypers']}, species "
                              f"{stored['species']}) differs from this config's")
        for part in ("train", "validation", "test"):
            if part in stored["split"] and list(stored["split"][part]) != list(self.split[part]):
                raise ConfigError(f"init_from {path}: it was trained on another data split "
                                  f"('{part}' differs); its test frames could leak into training")
        self.model.load_state_dict(stored["state_dict"])
        log.info("weights from %s (trained %s epochs)", path, stored["metadata"].get("epoch", "?"))

    def _resumable(self, path) -> dict:
        """The checkpoint at ``path`` (last.pt), checked to continue this config's run: readable,
        with a training state, written with the same config up to :data:`RUNTIME_KEYS` and the
        spelling of paths. Checked before any data is read."""
        advice = "use --restart (or delete it) to start over"
        try:
            stored = checkpoint.read(path)
        except checkpoint.CheckpointError as error:
            raise checkpoint.CheckpointError(f"cannot resume: {error}; {advice}") from None
        missing = sorted(set(RESUME_STATE) - set(stored["extra"]))
        if missing:
            raise checkpoint.CheckpointError(f"cannot resume: {path} holds no training state "
                                             f"({', '.join(missing)} missing); {advice}")
        try:
            before = resume_view(stored["metadata"]["config"])
            differences = differing_keys(before, resume_view(self.config))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ConfigError(f"{path} records no readable config: {advice}, or use another output "
                              "directory") from None
        if differences:
            raise ConfigError(f"{path} was written with another config ({'; '.join(differences)} "
                              f"differ): {advice}, or use another output directory")
        return stored

    def _resume(self, stored: dict, path) -> None:
        """Continue from ``stored``, the checkpoint at ``path`` (see :meth:`_resumable`)."""
        self.model.load_state_dict(stored["state_dict"])
        self.optimizer.load_state_dict(stored["extra"]["optimizer"])
        self.scheduler.load_state_dict(stored["extra"]["scheduler"])
        self.rng.bit_generator.state = json.loads(stored["extra"]["rng"])
        torch.set_rng_state(stored["extra"]["torch_rng"])
        meta = stored["metadata"]
        self.epoch, self.best, self.history = meta["epoch"], meta["best_validation_force_mae"], meta["history"]
        self.since_best = stored["extra"]["since_best"]
        if self.average is not None:
            self.average.load_state_dict(stored["extra"]["weight_average"])
        log.info("resumed from %s at epoch %d (best validation force MAE %.2f meV/Å)",
                 path, self.epoch, self.best)

    def _save(self, name, resumable=False):
        extra = {}
        if resumable:
            extra = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "rng": json.dumps(self.rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
                     "since_best": self.since_best}
            if self.average is not None:
                extra["weight_average"] = self.average.state_dict()
        checkpoint.save(self.output / name, self.model, self._metadata(), self.split, extra)

    def _validated_weights(self):
        """The weights validated and saved as best.pt: the moving average if ``ema_decay`` is set."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def _loss(self, graph, energy, forces):
        train = self.config["training"]
        n_atoms = torch.bincount(graph.structure, minlength=graph.n_structures)
        rotations = None
        if train["augment"]:
            rotations = _random_rotations(self.rng, graph.n_structures, self.dtype, self.device)
        ones = torch.ones(1, dtype=self.dtype, device=self.device)
        result = compute(self.model, graph, rotations, ones, virial=False, create_graph=True)
        energy_weight = train["energy_weight"] if self.epoch >= train["force_only_epochs"] else 0.0
        loss = (energy_weight * (((result.energy - energy) / n_atoms) ** 2).mean() / self.sigma_energy**2
                + train["force_weight"] * ((result.forces - forces) ** 2).mean() / self.sigma_forces**2)
        if train["symmetry_weight"] > 0:
            other = _random_rotations(self.rng, graph.n_structures, self.dtype, self.device)
            second = compute(self.model, graph, other, ones, virial=False, create_graph=True)
            loss = loss + train["symmetry_weight"] * (
                (((result.energy - second.energy) / n_atoms) ** 2).mean() / self.sigma_energy**2
                + ((result.forces - second.forces) ** 2).mean() / self.sigma_forces**2)
        return loss

    def run(self) -> dict:
        train = self.config["training"]
        started = time.time()
        log.info("model: %s, %d parameters; σ_E %.4f eV/atom, σ_F %.4f eV/Å",
                 self.hypers.to_dict(), sum(p.numel() for p in self.model.parameters()),
                 self.sigma_energy, self.sigma_forces)
        while self.epoch < train["epochs"]:
            epoch_start = time.time()
            if train["force_only_epochs"] and self.epoch == train["force_only_epochs"]:
                shift = refit_baseline(self.model, self.train_set)
                log.info("energy term on from this epoch: baseline shifted by %s eV per atom",
                         {z: round(float(b), 4) for z, b in zip(self.model.species, shift)})
            self.model.train()
            order = self.rng.permutation(len(self.train_set))
            losses = []
            for start in range(0, len(order), train["batch_size"]):
                graph, energy, forces = self.train_set.batch(order[start:start + train["batch_size"]])
                loss = self._loss(graph, energy, forces)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                if self.average is not None:
                    self.average.update()
                losses.append(float(loss.detach()))
                if len(losses) % PROGRESS_EVERY == 0:
                    log.info("  epoch %d: %d/%d structures, mean loss of the last %d batches %.4g",
                             self.epoch + 1, start + len(graph.cells), len(order), PROGRESS_EVERY,
                             np.mean(losses[-PROGRESS_EVERY:]))
            self.epoch += 1
            self.model.eval()
            record = {"epoch": self.epoch, "loss": float(np.mean(losses)),
                      "lr": self.scheduler.get_last_lr()[0]}
            improved = False
            if self.epoch % train["validate_every"] == 0 or self.epoch == train["epochs"]:
                with self._validated_weights():
                    errors = evaluate_errors(self.model, self.validation_set)
                record.update({f"validation_{k}": v for k, v in errors.items()})
                improved = record["validation_force_mae"] < self.best
                if improved:
                    self.best, self.since_best = record["validation_force_mae"], 0
                else:
                    self.since_best += train["validate_every"]
            record["seconds"] = time.time() - epoch_start
            self.history.append(record)
            if improved:  # after the history has this epoch, so that best.pt's history ends with it
                with self._validated_weights():
                    self._save("best.pt")
            log.info("epoch %4d  loss %.4g  val MAE E %.3f meV/atom  F %.2f meV/Å  lr %.2e  %.0f s",
                     self.epoch, record["loss"], record.get("validation_energy_mae", float("nan")),
                     record.get("validation_force_mae", float("nan")), record["lr"], record["seconds"])
            self._save("last.pt", resumable=True)
            if train["patience"] and self.since_best >= train["patience"]:
                log.info("early stop: no improvement in %d epochs", self.since_best)
                break
            if train["max_hours"] and time.time() - started > 3600 * train["max_hours"]:
                log.info("stopping after max_hours = %s; run again to resume", train["max_hours"])
                break
        return {"epoch": self.epoch, "best_validation_force_mae": self.best}


@contextlib.contextmanager
def logging_to(log_file: Path):
    """Log lines (INFO and up, timed) on stdout and into ``log_file`` inside the block, and no
    more after it. The file is opened at the first line logged: a Trainer that stops at its
    checks (:func:`check_environment`, the output folder, last.pt) writes none."""
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(log_file, delay=True)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)
    try:
        yield
    finally:
        for handler in handlers:
            logging.root.removeHandler(handler)
            handler.close()


def main(argv=None) -> int:
    parser = OneLineParser(
        prog="pet-train", description="Train PET on energies and forces (resumes OUTPUT/last.pt).",
        epilog="example: pet-train inputs/training/small.yaml --output runs/small")
    parser.add_argument("config", help="YAML file with sections model, data, training, output (a "
                        "relative data: path or training: init_from is taken from the file's folder, "
                        "the output from the current directory)")
    parser.add_argument("--output", help="output directory (overrides the config's 'output')")
    parser.add_argument("--restart", action="store_true", help="ignore OUTPUT/last.pt and start over")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, output=args.output)
        with logging_to(Path(config["output"]) / "train.log"):
            trainer = Trainer(config, restart=args.restart)
            result = trainer.run()
    except (ConfigError, DataError, checkpoint.CheckpointError, ValueError) as error:
        print(f"pet-train: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pet-train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"done: {result['epoch']} epochs, best validation force MAE "
          f"{result['best_validation_force_mae']:.2f} meV/Å; model in {trainer.output / 'best.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
