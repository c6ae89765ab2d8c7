"""Integrations of clustersync with frameworks (optional: each needs its framework)."""
