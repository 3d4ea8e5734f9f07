"""Simulation-based calibration (Talts et al. 2018), the full version of the test's check.

For the chinchilla, quality and mixing laws: 100 prior draws (60 for mixing), each simulated
on 40 runs and fitted (all replicates in one NUTS run; mixing replicates one by one), ranks
of the truth among 199 posterior draws, and a chi-square uniformity p-value per parameter
over 10 bins.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402

from datalaws.fit.laws import get_law, mixing_law  # noqa: E402
from datalaws.fit.validate import sbc_ranks, uniformity_pvalue  # noqa: E402

rng = np.random.default_rng(0)
n = 40
base = {"N": np.exp(rng.uniform(-2, 2, n)), "D": np.exp(rng.uniform(-2, 2, n))}
cases = {
    "chinchilla": (get_law("chinchilla"), base),
    "quality": (get_law("quality"), base | {"diversity": np.exp(rng.uniform(-0.3, 0.3, n)),
                                              "syntheticity": np.exp(rng.uniform(-1, 1, n))}),
    "mixing": (mixing_law(["a", "b", "c"]),
               base | dict(zip(["r.a", "r.b", "r.c"], rng.dirichlet([1, 1, 1], n).T))),
}
only = sys.argv[1:] or list(cases)
for name, (law, x) in cases.items():
    if name not in only:
        continue
    # mixing: replicates fitted one by one (see datalaws.fit.validate); 60 keep it ~10 min
    ranks = sbc_ranks(law, x, replicates=60 if name == "mixing" else 100, draws=199,
                      warmup=400, seed=1, separate=name == "mixing")
    pv = {k: uniformity_pvalue(v, 199, bins=10) for k, v in ranks.items()}
    worst = min(pv, key=pv.get)
    print(f"{name:11s} replicates {len(next(iter(ranks.values())))}: "
          + ", ".join(f"{k} p={v:.2f}" for k, v in pv.items())
          + f"  | min p {pv[worst]:.3f} ({worst}); Bonferroni 0.05/{len(pv)} "
          + ("passed" if pv[worst] > 0.05 / len(pv) else "FAILED"))
