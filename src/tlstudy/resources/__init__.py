"""Data files the package ships: the PACS reference lists (names, classes, sha256) and the
study's published numbers (study.yaml)."""
