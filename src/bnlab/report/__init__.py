"""Figures, tables and pages from what the tracking store holds."""
