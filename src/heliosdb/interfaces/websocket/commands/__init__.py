"""One module per action family."""
