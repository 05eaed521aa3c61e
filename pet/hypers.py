"""Hyper-parameters of PET; the defaults are the paper's water model (DESIGN.md section 3)."""

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class PETHypers:
    """Architecture of a PET model. Lengths in Å.

    cutoff: R_c; cutoff_width: Δ of the smooth cutoff; n_gnn: message-passing layers;
    d_pet: token width; n_tl: transformer layers per message-passing layer; n_heads: attention
    heads; d_feedforward: width of the transformer's feed-forward block; d_head: width of the
    readout MLPs (d_pet → d_head → d_head → 1).
    """

    cutoff: float = 4.0
    cutoff_width: float = 0.2
    n_gnn: int = 4
    d_pet: int = 128
    n_tl: int = 2
    n_heads: int = 4
    d_feedforward: int = 512
    d_head: int = 128

    def __post_init__(self):
        if not self.cutoff > 0 or not 0 < self.cutoff_width <= self.cutoff:
            raise ValueError(
                f"need cutoff > 0 and 0 < cutoff_width <= cutoff, got {self.cutoff}, {self.cutoff_width}"
            )
        for name in ("n_gnn", "d_pet", "n_tl", "n_heads", "d_feedforward", "d_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_pet % self.n_heads:
            raise ValueError(f"d_pet = {self.d_pet} must be divisible by n_heads = {self.n_heads}")

    @classmethod
    def from_dict(cls, values: dict) -> "PETHypers":
        """Hypers from a dict (e.g. the ``model`` section of a YAML file); unknown keys are errors."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PET hyper-parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)
