"""``python -m attractor_trio`` is the same as the ``attractor-trio`` command."""

from .cli import main

if __name__ == "__main__":
    main()
