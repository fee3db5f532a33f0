"""Fusion metrics (placeholder, registry follows)."""
