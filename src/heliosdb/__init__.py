"""HeliosDB: one database, every interface, PostgreSQL underneath."""

__version__ = "7.0.0"
