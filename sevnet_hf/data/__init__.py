"""Data: the prepared-dataset schema, face alignment, folds and transforms.

Preparation commands for each benchmark live in ``sevnet_hf.datasets_scripts``.
"""
