"""Placeholder: filled in by its kernel module."""
