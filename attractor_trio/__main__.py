"""``python -m attractor_trio`` is the same as the ``attractor-trio`` command."""

from .cli.main import main

if __name__ == "__main__":
    main()
