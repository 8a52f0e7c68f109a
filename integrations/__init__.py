"""Integrations of :mod:`iaisreg` with published model code (run from a checkout)."""
