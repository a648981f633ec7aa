"""`python -m gecko.demo`: the recipe end to end on one CPU (`gecko.experiments.demo`)."""

import sys

from gecko.experiments.demo import main

if __name__ == "__main__":
  sys.exit(main())
