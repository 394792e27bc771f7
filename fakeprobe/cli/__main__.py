"""``python -m fakeprobe.cli``: the command line."""

from fakeprobe.cli import main

main()
