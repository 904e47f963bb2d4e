"""unf: universal neural functionals over weight spaces described by axis labels."""
