"""Optional features shipped with asyncworker, each a plugin (``app.use(...)``)."""
