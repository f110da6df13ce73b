"""Adoption of plain tables: online conversion under load, refused shapes, crash trials, its commands."""
