"""`python -m lightning_rnn.bench ...`: the kernel benchmark harness (see `cli.py`)."""
import sys

from .cli import main

sys.exit(main())
