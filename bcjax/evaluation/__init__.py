"""Scoring a run: consumers and retrieval.

The unintended tasks (`unintended`), frozen consumer heads and their
training (`consumers`), their vmapped scoring across versions (`scoring`),
the frozen-index retrieval evaluation (`retrieval`), the compatibility
matrix (`compatibility`) and the training curves (`curves`).
"""
