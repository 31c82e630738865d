"""Typed definitions shared by every stage: configs, manifests, Arrow schemas, contracts, tokens.

Nothing here imports Prefect or does I/O beyond reading its own files.
"""
