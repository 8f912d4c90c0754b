"""Placement: activation profile + hardware profile + VRAM budget -> placement.json.

`planner.place` is the stage (it pulls in pulp and HiGHS); the converter and the runtime only
need `load_placement`, exported here without the solver's imports.
"""

from thermocline.placement_solver.placement import Placement, SolverReport, load_placement

__all__ = ["Placement", "SolverReport", "load_placement"]
