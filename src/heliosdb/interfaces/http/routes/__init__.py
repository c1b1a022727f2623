"""One module per endpoint family under /api/v1."""
