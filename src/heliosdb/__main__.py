import sys

from heliosdb.cli import main

sys.exit(main())
