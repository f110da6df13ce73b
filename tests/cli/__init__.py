"""Properties across every command and validator: hostile names, identifiers, intervals, one-line errors."""
