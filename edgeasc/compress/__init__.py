"""Compression applied to any network: which weights are zero (magnitude and gate masks),
which channels exist (channel plans: the physically smaller network, structured.py), fitting
a challenge's budget (fit.py) and the rule sets it is measured by (rules.py).

May import: models, data, runtime and the base (errors, io, console). Never train, export or
cli: the training loop drives the pruners, not the other way round.
"""
