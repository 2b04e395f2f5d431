"""The base layer: schemas, errors, files, logging, assets, progress, the instance table, vocab identity.

Everything above imports from here; nothing here imports from above (import-linter holds it).
"""
