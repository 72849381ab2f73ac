"""The registrations example (seeds 000, 002, 004): its catalog, its event schema (and its
earlier versions) and its domain app, the one `make demo` plays."""
