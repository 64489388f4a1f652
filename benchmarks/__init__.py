"""Benchmarks beyond ``rcmseg bench``; each is a module run from the repository root as
``python -m benchmarks.<name>``, and its JSON results are kept in ``benchmarks/results/``.
"""
