"""A late-ack task whose worker died under it, and the poison message that
kills every worker it reaches.

``store`` keeps start markers and worker leases beside the result backend,
``liveness`` tells a dead worker from a live one, ``gate`` judges redelivered
messages and isolates suspects (the design is in its docstring), and
``plugin`` wires them into every worker.
"""
