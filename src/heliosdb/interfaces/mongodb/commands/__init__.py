"""One module per command family; each registers its commands in registry.COMMANDS."""
