"""The package version, in a leaf module: library code records it (checkpoints, encoder files, dataset meta)
without importing the package root, whose public API loads the library on first use."""

__version__ = "0.1.0"
