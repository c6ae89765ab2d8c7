"""Adversarial reliability suite (faults, fencing, checks)."""
