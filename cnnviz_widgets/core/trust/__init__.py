"""Can I trust this map? Checks of attribution maps, each after its paper.

- ``faithfulness.py``: deletion and insertion curves (Petsiuk et al. 2018), with a
  random and a centre-prior map as the baselines to beat.
- ``sanity.py``: the cascading model-parameter randomisation test (Adebayo et al. 2018).
- ``pointing.py``: the pointing game (Zhang et al. 2018).
"""

from .faithfulness import (
    FaithfulnessCurves,
    baseline_maps,
    centre_prior_maps,
    faithfulness,
    faithfulness_baselines,
    random_maps,
)
from .pointing import PointingGame, peak_pixels, pointing_game
from .sanity import SanityCheck, sanity_check, spearman

__all__ = [
    "FaithfulnessCurves",
    "PointingGame",
    "SanityCheck",
    "baseline_maps",
    "centre_prior_maps",
    "faithfulness",
    "faithfulness_baselines",
    "peak_pixels",
    "pointing_game",
    "random_maps",
    "sanity_check",
    "spearman",
]
