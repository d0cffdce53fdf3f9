"""`triton-ops tune`: statistics, batcher model, search and the measured sweep."""
