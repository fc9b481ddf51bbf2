"""CPU benchmark: generated optimizers vs torch.optim and the machine's bandwidth (see codegen/bench.py).

    python benchmarks/bench_cpu.py [--quick]      # same as `optdsl bench --suite cpu`
"""

import sys

from optdsl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "cpu", *sys.argv[1:]]))
