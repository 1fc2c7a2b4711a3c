"""Support for the original CompVis ImageBART release: its architectures and checkpoint conversion."""
