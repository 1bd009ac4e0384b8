"""`python -m npuyolo.cli`: the same as the `npuyolo` command."""

from npuyolo.cli import main

main()
