"""Unit tests of the worker core: each middleware and outcome step, on the in-memory broker."""
