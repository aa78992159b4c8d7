"""Benchmarks: each module compares one part of the toolkit against a peer, in the same run, as a ratio.

Run with `make bench` (all) or `python -m bench NAME...`. Each module has `main() -> dict`, writes
`bench/results/<name>.json` and prints a one-screen summary; docs/benchmarks.md explains the numbers.
Load is bounded in count and time and stays on loopback or inside a test network namespace.
"""
