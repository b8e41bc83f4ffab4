"""The discrete-event kernel: `Environment` with `now`, `schedule`, `step`, `run(until=)`."""

from megawatt.sim.kernel import Environment

__all__ = ["Environment"]
