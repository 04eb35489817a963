"""``python -m loopwise``: the same as the ``loopwise`` command."""

from loopwise.cli.main import main

if __name__ == "__main__":
    main()
