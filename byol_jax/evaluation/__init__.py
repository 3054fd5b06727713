"""Evaluation of frozen encoders: linear probe and weighted kNN."""
