"""`python -m rbmsearch STAGE ...`: the `rbmsearch` command."""

from rbmsearch.cli import main

main()
