"""Analyses of i-PI outputs for the symmetry-breaking experiments (DESIGN.md sections 5 and 7)."""
