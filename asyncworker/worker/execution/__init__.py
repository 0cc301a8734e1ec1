"""Execution middleware: around the task body (``timelimit``, ``request``, ``body``)."""
