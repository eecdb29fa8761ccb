"""Dataset readers: every supported format as typed video records, plus their file helpers."""
