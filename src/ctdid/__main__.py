"""``python -m ctdid`` runs the command-line interface."""

from ctdid.cli import main

main()
