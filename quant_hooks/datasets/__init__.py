"""Datasets and transforms registered for configs."""
