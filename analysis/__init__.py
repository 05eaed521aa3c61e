"""Analyses of i-PI outputs for the symmetry-breaking experiments (`pet-analyze`; the README's Analyses section)."""
