#!/usr/bin/env bash
# The main job: set up ./.venv if needed, then run the MTS example (one water molecule, raw PET at
# every 0.5 fs inner step, its 2i rotation average every 5 fs outer step) with i-PI and pet-driver
# on the shipped model ($PET_IPI_MODEL overrides it). 30 outer = 300 inner steps, about a minute
# on 2 CPU cores. i-PI's outputs stay in inputs/mts-example/. Extra arguments go to pet-run,
# e.g. --steps 200 or --grid 3i.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
exec .venv/bin/pet-run inputs/mts-example --steps 30 "$@"
