"""Keel's protocol, generated from ``proto/keel`` when this package is built."""
