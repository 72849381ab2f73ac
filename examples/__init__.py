"""Example catalogs, one folder each: its catalog file, its event schemas and its domain app.

`DEFAULT` names the one Herald runs when HERALD_CATALOG is unset (`make demo` plays it).
"""
