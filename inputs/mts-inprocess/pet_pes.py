"""The file i-PI loads for <pes>custom</pes>: PET from the installed pet-ipi (driver.ipi_pes)."""

from driver.ipi_pes import __DRIVER_CLASS__, __DRIVER_NAME__, PETPotential  # noqa: F401
