import sys

from lightning_rnn.visualize.command import main

sys.exit(main())
