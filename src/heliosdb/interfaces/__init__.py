"""One package per interface; they call services and never each other."""
