"""The noise gate (`measure.gate_spread`): a candidate whose timed repeats spread more
than the limit is measured again, up to `gate_retries` times, on the same worker; the
measurement with the smallest spread is kept, with every spread seen (`extra.gate`).

The kind here scripts its repeats (a spread of 10x, then 3x, then 1.1x), which is what a
loaded and then quieter node gives, so the gate's decisions are known in advance; the
worker is the platform's real MeasureWorker.
"""

from __future__ import annotations

from typing import Any

from tunelab.platform.kinds import Built, EvalContext, Measurement, WrongResult, get_kind
from tunelab.platform.spec import JobSpec, parse_spec
from tunelab.schema.models import TrialStatus
from tunelab.workers.context import JobHandle
from tunelab.workers.tasks import EvalItem, MeasureWorker

SPREADS = [[1e-3, 10e-3], [1e-3, 3e-3], [1e-3, 1.1e-3], [1e-3, 1.05e-3]]


class Scripted(type(get_kind("testing-trivial"))):  # type: ignore[misc]
    """testing-trivial whose n-th evaluation returns SPREADS[n] (or raises `fail_at`)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        n, self.calls = self.calls, self.calls + 1
        if n == self.fail_at:
            raise WrongResult("differs on the re-measurement")
        return Measurement(latencies_s=SPREADS[min(n, len(SPREADS) - 1)])


def _measure(kind: Scripted, **measure: Any):
    spec = parse_spec({"name": "g", "kind": "testing-trivial", "workload": {"n": 1},
                       "measure": measure})  # fmt: skip
    job = JobHandle("sqlite://", 0, "testing-trivial")
    return MeasureWorker(kind).measure(kind, spec, job, EvalItem("k", {"i": 0}, None, 1))


def test_a_noisy_candidate_is_measured_again_until_its_spread_passes() -> None:
    kind = Scripted()
    out = _measure(kind, gate_spread=1.5, gate_retries=3)
    assert out.status == TrialStatus.ok and kind.calls == 3  # 10x, 3x, then 1.1x: stop
    assert out.latencies_s == SPREADS[2]
    assert out.info["gate"] == {"limit": 1.5, "spreads": [10.0, 3.0, 1.1], "remeasured": 2}


def test_the_gate_is_bounded_and_keeps_the_smallest_spread() -> None:
    kind = Scripted()
    out = _measure(kind, gate_spread=1.02, gate_retries=2)
    assert kind.calls == 3 and out.latencies_s == SPREADS[2]  # the tightest of 10x, 3x, 1.1x
    assert out.info["gate"]["spreads"] == [10.0, 3.0, 1.1]


def test_no_gate_by_default_and_none_for_a_tight_measurement() -> None:
    kind = Scripted()
    assert _measure(kind).latencies_s == SPREADS[0] and kind.calls == 1
    tight = Scripted()
    tight.calls = 2  # its first measurement spreads 1.1x
    out = _measure(tight, gate_spread=1.5)
    assert tight.calls == 3 and "gate" not in out.info


def test_a_wrong_re_measurement_ends_the_gate_as_wrong() -> None:
    kind = Scripted(fail_at=1)
    out = _measure(kind, gate_spread=1.5)
    assert out.status == TrialStatus.wrong_result and kind.calls == 2
