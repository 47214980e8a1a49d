"""A `DepthPredictor` for Ray's wiring tests: its actors (processes a test cannot patch) load checkpoints
of a `STAND_IN_FOLDER` folder into the stand-in network. Ray imports this module in each actor by name
(tests/ on the workers' PYTHONPATH); no other worker pays for it."""

from support.stand_in_backends import install_marked_stand_ins
from trt_metric3d.ray import DepthPredictor


class StandInDepthPredictor(DepthPredictor):
    def __init__(self, *args, **kwargs) -> None:
        install_marked_stand_ins()
        super().__init__(*args, **kwargs)
