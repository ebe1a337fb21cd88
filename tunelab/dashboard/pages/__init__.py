"""Built-in dashboard pages; every module here with a `PAGE` is listed (see registry)."""
