"""`python -m soak` runs the same CLI as the `soak` console script."""

from soak.cli import main

main()
