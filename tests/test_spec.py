"""Job specs are refused with a message naming the field, before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.platform.spec import SpecError, load_spec, load_specs, parse_spec

GOOD = {"name": "g", "kind": "pipeline-search", "workload": {"M": 64, "N": 64, "K": 64}}


def spec(**changes: object) -> dict:
    data = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def test_defaults_fill_in() -> None:
    s = parse_spec(GOOD)
    assert s.target.kind == "llvm"
    assert s.search.strategy == "exhaustive"
    assert s.measure.repeats == 5
    assert s.workload["dtype"] == "float32"


@pytest.mark.parametrize(
    ("data", "field", "phrase"),
    [
        (spec(kind="no-such-kind"), "kind", "unknown job kind 'no-such-kind'"),
        (spec(search__budget=-3), "search.budget", "greater than 0"),
        (spec(search__strategy="annealing"), "search.strategy", "known: exhaustive, model"),
        (spec(workload__M=0), "workload.M", "greater than 0"),
        (spec(workload__dtype="int4"), "workload.dtype", "float32"),
        (spec(workload__colour="blue"), "workload.colour", "Extra inputs"),
        (spec(measure__repeats=0), "measure.repeats", "greater than 0"),
        (spec(measure__run_timeout_s=-1), "measure.run_timeout_s", "greater than 0"),
        (spec(target__kind="cuda"), "target", "needs an arch"),
        (spec(target__kind="cuda", target__arch="ampere"), "target", "sm_80"),
        (spec(space__stages=[0, 9]), "space.stages", "between 1 and 6"),
        (spec(space__block_row_warps=[2]), "(spec)", "do not apply to llvm"),
        (spec(space__tile_m=[48]), "workload.M", "M=64 is not a multiple of any tile_m (48)"),
        (
            spec(workload__M=100, workload__N=64, workload__K=32),
            "workload.M",
            "M=100 is not a multiple of any tile_m (32, 64, 128, 256)",
        ),
        (
            spec(workload__M=10**6, workload__N=10**6, workload__K=10**6),
            "workload.M",
            "past the 2,147,483,647 a kernel can index",
        ),
        (spec(surprise=1), "surprise", "Extra inputs"),
        ({k: v for k, v in GOOD.items() if k != "name"}, "name", "Field required"),
    ],
)
def test_invalid_specs_name_the_field(data: dict, field: str, phrase: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(data, "job.yaml")
    message = str(err.value)
    assert f"  {field}: " in message, message
    assert phrase in message, message


def test_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid yaml"):
        load_spec(broken)
    scalar = tmp_path / "scalar.json"
    scalar.write_text("42")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(scalar)


def test_examples_are_valid() -> None:
    examples = sorted(Path(__file__).parent.parent.joinpath("examples").glob("*.*"))
    assert examples
    for path in examples:
        assert load_specs(path)
