"""`python -m classifier` is the `evidence` command."""

from classifier.cli import main

main()
