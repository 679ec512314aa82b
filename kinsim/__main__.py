import sys

from kinsim.cli import main

sys.exit(main())
