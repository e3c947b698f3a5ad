"""`python -m abci_app.cli ...` runs the `gradchain` command (used for daemons the localnet starts)."""

from abci_app.cli.main import main

main()
