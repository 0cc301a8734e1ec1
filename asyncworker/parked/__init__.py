"""Parked tasks stay visible: a durable record of each task parked in a delay
queue, read by ``inspect scheduled``.

A task whose ETA is past ``worker_eta_hold_limit`` leaves the worker for a
delay queue (``broker/delay.py``); no process holds it until it comes back.
``store`` records it beside the result backend when it is parked, and
``plugin`` lists the records of this node after the tasks it holds in memory,
so ``celery inspect scheduled`` (and Flower) still show it, across restarts
of the node.
"""
