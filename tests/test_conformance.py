"""Every kind passes the conformance checks of the testing kit: the kit's own kinds,
pipeline-search (a small CPU job, real TVM builds) and graph-rewrite (a test-size BERT)."""

from __future__ import annotations

from typing import Any, ClassVar

from tunelab.platform.kinds import get_kind
from tunelab.testing.conformance import KindConformance
from tunelab.testing.kinds import Episodic, Faulty, Quadratic, Trivial


class TestTrivial(KindConformance):
    kind = Trivial()
    spec: ClassVar[dict[str, Any]] = {"name": "c", "kind": "testing-trivial", "workload": {"n": 20}}


class TestQuadratic(KindConformance):
    kind = Quadratic()
    spec: ClassVar[dict[str, Any]] = {
        "name": "c", "kind": "testing-quadratic", "workload": {},
        "search": {"strategy": "model", "cost_model": "xgboost", "budget": 12, "batch_size": 4},
    }  # fmt: skip


class TestFaulty(KindConformance):
    kind = Faulty()
    spec: ClassVar[dict[str, Any]] = {
        "name": "c",
        "kind": "testing-faulty",
        "workload": {"faults": ["good", "wrong"]},
    }


class TestEpisodic(KindConformance):
    kind = Episodic()
    spec: ClassVar[dict[str, Any]] = {
        "name": "c", "kind": "testing-episodic",
        "workload": {"runs": 2, "steps": 6, "checkpoint_every": 3, "step_s": 0},
    }  # fmt: skip


class TestPipelineSearch(KindConformance):
    kind = get_kind("pipeline-search")
    spec: ClassVar[dict[str, Any]] = {
        "name": "c", "kind": "pipeline-search", "workload": {"M": 64, "N": 64, "K": 64},
        "space": {"tile_m": [16, 32], "tile_n": [32], "tile_k": [16], "micro_m": [4],
                  "micro_n": [8], "stages": [1, 2], "reg_stages": [1]},
        "measure": {"repeats": 2},
    }  # fmt: skip


class TestGraphRewrite(KindConformance):
    kind = get_kind("graph-rewrite")
    spec: ClassVar[dict[str, Any]] = {
        "name": "c", "kind": "graph-rewrite",
        "workload": {"model": "bert", "size": "test", "horizon": 3, "max_candidates": 4},
        "search": {"strategy": "random", "random": {"episodes": 2}},
        "measure": {"threads": 1, "rounds": 3},
    }  # fmt: skip
