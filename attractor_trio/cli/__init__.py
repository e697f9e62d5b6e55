"""The ``attractor-trio`` command line: one module per command group; ``main.main`` is the entry."""
