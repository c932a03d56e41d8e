"""NumPy references: they define the semantics the compiled kernels must reproduce."""
