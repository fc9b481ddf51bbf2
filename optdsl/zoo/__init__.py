"""The zoo: one program per file, each citing its source. Files here are DSL, parsed, never imported."""
