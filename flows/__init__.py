"""Prefect flows: thin, typed parameters -> library calls (no maths, no mlflow calls)."""
