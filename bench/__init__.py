"""The benchmark (``python -m bench``); see :mod:`bench.run`."""

#: How long a ``sleep`` task waits: an I/O wait with nothing else to do. Here, with
#: no imports, so that no worker's figures include a module it does not need.
SLEEP_SECONDS = 0.1
