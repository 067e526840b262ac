"""minillama: Llama built from scratch, one lesson at a time, and run fast on a CPU."""

import os

# OpenMP threads (Numba's parallel loops and torch's both run on libgomp) spin after each
# parallel loop before they sleep. A decode step runs 30-60 short parallel loops, so how long they spin
# decides the 2-thread speed. Measured here, stories15M decode at 2 threads:
#   OMP_WAIT_POLICY=PASSIVE  sleep at once: 66 us to wake a thread per loop, 269 tok/s
#   libgomp default          300,000 spins: 780 tok/s idle, 284 with two busy processes
#   ACTIVE                   spin forever: 800 idle, 12-238 with two busy processes
#   GOMP_SPINCOUNT=10000     770 idle, 343 with two busy processes: the best of both
# libgomp reads this when it loads (Numba's at its first parallel loop, torch's bundled copy
# at `import torch`), so it applies to each runtime loaded after minillama is imported; a
# value already in the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
