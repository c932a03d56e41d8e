"""The program builder: model + CPU -> kernel specs (the only code that looks at sparsity and sizes)."""
