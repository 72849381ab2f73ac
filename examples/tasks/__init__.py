"""The tasks example (seed 001): its catalog, its event schema and its domain app."""
