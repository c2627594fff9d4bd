import sys

from palyra_ops.cli import main

sys.exit(main())
