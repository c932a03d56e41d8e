"""Per-ISA kernel templates (TOML), read through jitvoc.isa. Data only."""
