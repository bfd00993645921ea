"""python3 -m user.mqttreplicate: the command line."""
import sys

from .cli import main

sys.exit(main())
