"""Thin Celery tasks: decode ids, get per-process resources, call one core function, decide retry."""
