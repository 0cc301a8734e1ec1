"""Building blocks of the vision pipeline: S3 storage, the GPT client, the answer check.

The tasks that use them live in :mod:`asyncworker.tasks.vision`.
"""
