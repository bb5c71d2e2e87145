"""Compiled kernels (private): called only by fastrnn's validated layers."""
