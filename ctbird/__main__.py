"""``python -m ctbird ...``: the ``ctbird`` command line."""

from ctbird.cli import main

if __name__ == "__main__":
    main(prog_name="ctbird")
