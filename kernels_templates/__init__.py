"""Per-ISA kernel templates (TOML), instantiated by jitvoc.emit.isa. Data only."""
