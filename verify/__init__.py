"""Verification of emitted code against autograd and finite differences."""
