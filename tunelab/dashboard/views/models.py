"""Cost models side by side: several jobs of one workload, one row each (Spearman's rho,
top-k recall, MAPE, trials to 99% of the best known) and one predicted-vs-measured
chart per job, labelled by the cost model that predicted and the strategy that searched."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from sqlalchemy import Engine

from tunelab.dashboard import common, queries, style
from tunelab.dashboard.registry import Page
from tunelab.dashboard.views.model import RHO, reach_text, scatter_figure
from tunelab.units import fmt_value

PAGE = Page(title="Cost models", url_path="cost-models", icon=":material/compare:", order=35)
DEFAULT_JOBS = 6  # preselected: the workload's newest jobs
CHART_COLUMNS = 3
NOT_APPLICABLE = "not applicable"


@dataclass
class JobModel:
    """What the page shows of one job."""

    job: queries.JobRow
    report: queries.ModelReport | None  # None: not applicable to its objective
    reach: int | None
    reference: queries.Reference

    @property
    def cost_model(self) -> str:
        """The models that made its predictions, in the order they did ('' for none)."""
        if self.report is None:
            return ""
        return " → ".join(s.model or "unnamed" for s in self.report.sources)

    @property
    def use(self) -> str:
        """How the predictions were used."""
        if self.report is None:
            return NOT_APPLICABLE
        if not self.report.sources:
            return "none recorded"
        return {True: "guided the search", False: "recorded alongside"}.get(
            queries.guided(self.job.strategy), "recorded"
        )

    @property
    def title(self) -> str:
        return f"job {self.job.id} · {self.cost_model or 'no model'} · {self.job.strategy}"


def collect(engine: Engine, jobs: list[queries.JobRow], k: int) -> list[JobModel]:
    """Each job's model metrics (whole job, no windows), reference and trials to 99%."""
    out = []
    for j in jobs:
        ref = queries.best_reference(engine, j.id)
        applies = queries.not_applicable(j.objective, j.direction) is None
        report = queries.model_report(engine, j.id, k=k, per_window=False) if applies else None
        out.append(JobModel(j, report, queries.reach_trial(engine, j.id, ref.value), ref))
    return out


def table_rows(rows: list[JobModel], k: int) -> list[dict[str, object]]:
    """One row per job: human column names, blank where there is nothing to show."""
    out = []
    for r in rows:
        m = r.report.overall if r.report else None
        na = r.report is None

        def num(x: float | None, na: bool = na) -> str:
            return NOT_APPLICABLE if na else style.fmt_number(x, 3)

        out.append(
            {
                "job": r.job.id,
                "strategy": r.job.strategy,
                "cost model": NOT_APPLICABLE if na else r.cost_model,
                "predictions": r.use,
                "n": m.n if m else None,
                f"Spearman {RHO}": num(m.spearman if m else None),
                f"top-{k} recall": num(m.topk_recall if m else None),
                "MAPE (%)": num(m.mape_pct if m else None),
                "trials to 99%": reach_text(r.reach, r.job.n_done, r.reference),
                "best": fmt_value(r.reference.own_value, r.job.objective)
                if r.reference.own_value is not None
                else "",
                "measured against": _against(r.reference),
                "name": r.job.name,
            }
        )
    return out


def reference_caption(rows: list[JobModel]) -> str:
    """What each row's trials to 99% were measured against, each reference said once."""
    text = (
        "Trials to 99%: the first trial whose best-so-far came within 1% of the best known "
        "for the workload on the job's target and device; 'own best' where no other job of "
        "it there did better."
    )
    seen: set[int] = set()
    for r in rows:
        ref = r.reference
        if ref.value is None or ref.own or ref.job_id in seen:
            continue
        seen.add(ref.job_id)  # type: ignore[arg-type]
        text += f" {ref.label[0].upper()}{ref.label[1:]}: {fmt_value(ref.value, r.job.objective)}."
    return text


def _against(ref: queries.Reference) -> str:
    if ref.value is None:
        return ""
    return "own best" if ref.own else f"job {ref.job_id}'s best"


def _pick_workload(engine: Engine) -> queries.WorkloadJobs | None:
    workloads = queries.workloads_with_jobs(engine)
    if not workloads:
        return None
    by_id = {w.workload_id: w for w in workloads}
    asked = [int(p) for p in str(st.query_params.get("job", "")).split(",") if p.isdigit()]
    first = next((w.workload_id for w in workloads if asked and asked[0] in w.job_ids), None)
    ids = list(by_id)
    chosen = st.selectbox(
        "Workload", ids, index=ids.index(first) if first is not None else 0,
        format_func=lambda i: by_id[i].label, key="workload",
    )  # fmt: skip
    return by_id[chosen] if chosen is not None else None


def render(engine: Engine) -> None:
    """The page."""
    st.title("Cost models")
    workload = _pick_workload(engine)
    if workload is None:
        common.no_jobs()
        return
    listed, _ = queries.list_jobs(engine, limit=500)
    of_workload = {j.id: j for j in listed if j.id in set(workload.job_ids)}
    asked = [int(p) for p in str(st.query_params.get("job", "")).split(",") if p.isdigit()]
    default = [i for i in asked if i in of_workload] or list(of_workload)[:DEFAULT_JOBS]
    chosen = st.multiselect(
        "Jobs of this workload", list(of_workload), default=default,
        format_func=lambda i: of_workload[i].label, key=f"jobs-{workload.workload_id}",
    )  # fmt: skip
    st.query_params["job"] = ",".join(str(i) for i in chosen)
    k = int(st.number_input("k for top-k recall", 1, 1000, 10, key="k"))
    if not chosen:
        st.info("Choose one or more jobs of this workload to compare their cost models.")
        return
    jobs = [of_workload[i] for i in chosen]

    @st.fragment(run_every=common.refresh_every(jobs))
    def body() -> None:
        fresh = [queries.get_job(engine, j.id) or j for j in jobs]
        rows = collect(engine, fresh, k)
        st.dataframe(table_rows(rows, k), hide_index=True, width="stretch")
        if any(r.reference.value is not None for r in rows):
            st.caption(reference_caption(rows))
        shown = [r for r in rows if r.report is not None and r.report.overall is not None]
        skipped = [r for r in rows if r.report is None]
        if skipped:
            st.info(
                "Cost-model metrics: not applicable to "
                + "; ".join(
                    f"job {r.job.id} ({queries.not_applicable(r.job.objective, r.job.direction)})"
                    for r in skipped
                )
                + "."
            )
        if not shown:
            if not skipped:
                st.info("None of these jobs records a prediction (`predicted_cost`).")
            return
        st.markdown("#### Predicted against measured, per job")
        limit = max(300, 3000 // len(shown))
        samples = {
            r.job.id: queries.prediction_sample(engine, r.job.id, limit=limit, n=r.report.overall.n)
            for r in shown
            if r.report is not None and r.report.overall is not None
        }
        values = [v for pairs in samples.values() for pair in pairs for v in pair if v > 0]
        bounds = (min(values), max(values)) if values else None
        columns = st.columns(min(CHART_COLUMNS, len(shown)))
        for i, r in enumerate(shown):
            with columns[i % len(columns)]:
                fig = scatter_figure(samples[r.job.id], height=340, bounds=bounds, title=r.title)
                # no mode bar: over a narrow chart it would cover the title
                st.plotly_chart(fig, width="stretch", key=f"scatter-{r.job.id}",
                                config={"displayModeBar": False})  # fmt: skip
        st.caption(
            f"Spearman {RHO}: rank correlation of predicted and measured latency (ties at "
            f"their average rank). Top-{k} recall: the expected share of the {k} fastest "
            f"measured trials that are among the {k} predicted fastest, ties at the {k}-th "
            f"place broken at random (blank when n ≤ {k}), as on the Performance model page. "
            "MAPE: mean |predicted - measured| / measured. Predictions 'guided the search' "
            "when the model strategy chose its candidates by them; 'recorded alongside' when "
            "the strategy (exhaustive, random) chose without them. Every chart shares its "
            "axes; each plots an even sample of at most "
            f"{limit:,} trials."
        )

    body()


if __name__ == "__main__":
    common.run(render)
