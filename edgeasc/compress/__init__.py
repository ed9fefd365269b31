"""Compression applied to any network: magnitude pruning (and, at export, quantisation)."""
