"""Logs and metrics, shared by every layer."""
