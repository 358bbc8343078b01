"""The continual pre-training study, as a script for torchrun:

    rewarm launch -- torchrun --nproc_per_node 2 examples/continual_pretraining.py [--quick]

It is the same study `rewarm demo` runs in one process (see rewarm/study.py)."""

import sys

from rewarm.study import main

if __name__ == "__main__":
    sys.exit(main())
