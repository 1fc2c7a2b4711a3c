"""Standalone ImageBART training: VQGAN, codebook shrinking, one process per scale, assembly (see training/*.py)."""
