"""``python -m fakeprobe``: the command line."""

from fakeprobe.cli import main

main()
