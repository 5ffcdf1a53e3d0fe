"""Small helpers any layer may use: atomic writes, errors, locks, progress, memory, YAML, statistics."""
