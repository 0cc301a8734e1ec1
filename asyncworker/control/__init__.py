"""Remote control over Celery's mailbox (``celery.pidbox``)."""
