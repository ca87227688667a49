"""Pure numpy kernels of the method (no Spark import): statistics, masks, tournament, metrics."""
