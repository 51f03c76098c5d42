"""Expert parallelism for lego units: layout (pure), dispatch, placement."""
