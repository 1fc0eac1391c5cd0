"""Moving selected pods off a node: pure selection (``selection``) and the eviction loop (``engine``)."""
