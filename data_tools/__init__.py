"""Data toolkit."""
