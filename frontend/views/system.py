"""System: the served model, the retraining loop, recent predictions and the ops tools.

Visitors see aggregate numbers; users' photos, the per-request history and raw error text
need the operator login (the backend enforces it; this page only asks for it)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from frontend import ui
from frontend.client import BackendError, BackendUnavailable
from utils.settings import CLASS_NAMES

STATE_BADGES = {
    "pending": "⏳ pending",
    "triggered": "🚀 triggered",
    "running": "⚙️ running",
    "succeeded": "✅ succeeded",
    "failed": "❌ failed",
    "superseded": "⏩ superseded",
    "skipped": "⏭️ skipped (no new training data)",
}
UNREACHABLE = ("backend_unreachable", "backend_timeout")
LATEST_RETRAINS = 5


def fetch(call, *args: Any) -> tuple[Any, BackendError | None]:
    try:
        return call(*args), None
    except BackendError as exc:
        return None, exc


def pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "—"


def model_section(model: dict[str, Any] | None, error: BackendError | None) -> None:
    st.subheader("Serving model")
    if error is not None:
        ui.show_error(error)
        return
    metrics = model.get("metrics") or {}
    arch = model.get("architecture") or {}
    st.markdown(f"**`{model['version']}`** · serving since {_when(model.get('loaded_at'))}")
    a, b, c, d = st.columns(4)
    a.metric("Validation accuracy", pct(metrics.get("accuracy")), border=True)
    b.metric("Macro F1", pct(metrics.get("macro_f1")), border=True)
    c.metric("Validation images", f"{metrics['n']:,}" if "n" in metrics else "—", border=True)
    d.metric("Trained", _when(model.get("created_at"))[:10] or "—", border=True)
    if model.get("last_reload_error"):
        st.warning(f"The last reload failed; the model above keeps serving. {model['last_reload_error']}", icon="⚠️")
    left, right = st.columns([1, 1], gap="large")
    with left:
        details = {
            "Source": f"`{model.get('source')}`",
            "Data version": f"`{model['data_version']}`" if model.get("data_version") else "—",
            "Architecture": f"{arch.get('backbone')} α={arch.get('alpha')}, {arch.get('input_size')} px input",
            "Runtime": model.get("runtime") or "—",
            "Trained at": _when(model.get("created_at")) or "—",
        }
        st.markdown("\n".join(f"- **{k}:** {v}" for k, v in details.items()))
        per_dataset = metrics.get("per_dataset") or {}
        if per_dataset:
            st.caption("Accuracy per dataset: " + " · ".join(f"{k} {pct(v)}" for k, v in per_dataset.items()))
    with right:
        per_class = metrics.get("per_class") or {}
        if per_class:
            df = pd.DataFrame(per_class).T.reindex([c for c in CLASS_NAMES if c in per_class])
            df.index = [ui.class_title(c) for c in df.index]
            share = {"format": "percent", "min_value": 0, "max_value": 1, "width": "small"}
            st.dataframe(
                df,
                column_config={
                    "precision": st.column_config.ProgressColumn("Precision", **share),
                    "recall": st.column_config.ProgressColumn("Recall", **share),
                    "f1": st.column_config.ProgressColumn("F1", **share),
                    "support": st.column_config.NumberColumn("Images", format="%d", width="small"),
                },
            )


def retrain_section(
    stats: dict[str, Any] | None,
    retrains: list[dict[str, Any]] | None,
    errors: tuple[BackendError | None, BackendError | None],
) -> None:
    st.subheader("Retraining")
    stats_error, retrains_error = errors
    if stats_error is not None:
        ui.show_error(stats_error)
    else:
        ui.retrain_progress(stats["predictions_since_retrain"], stats["retrain_threshold"])
        a, b, c, d = st.columns(4)
        a.metric("Predictions", f"{stats['predictions']:,}")
        b.metric("Labelled images", f"{stats['labelled_images']:,}")
        c.metric("From feedback", f"{stats['feedback_labels']:,}")
        d.metric(
            "Confirmed right",
            pct(stats.get("feedback_accuracy")),
            help=f"Share of the last {stats.get('feedback_window', 0)} answered predictions users confirmed",
        )
        by_class = stats.get("labels_by_class") or {}
        if by_class:
            st.caption("Labels per class: " + " · ".join(f"{ui.class_title(k)} {v}" for k, v in by_class.items()))

    st.markdown("**Retrain requests**")
    if retrains_error is not None:
        ui.show_error(retrains_error)
    elif retrains is None:
        st.info("This backend does not list retrain requests (it has no `GET /retrains` yet).", icon="ℹ️")
    elif not retrains:
        st.info("No retrain has been requested yet.", icon="⏳")
    else:
        for r in retrains[:LATEST_RETRAINS]:
            retrain_row(r)
        if len(retrains) > LATEST_RETRAINS:
            with st.expander(f"All {len(retrains)} requests"):
                st.dataframe(retrain_table(retrains), hide_index=True)


def retrain_row(r: dict[str, Any]) -> None:
    """One request on one line: state, when, what ran, what it produced."""
    with st.container(border=True):
        head, run, outcome = st.columns([1.3, 2.4, 2.4], vertical_alignment="center")
        head.markdown(f"**Request #{r.get('id')}**  \n{STATE_BADGES.get(r.get('state', ''), r.get('state'))}")
        lines = [f"Requested {_when(r.get('requested_at'))}"]
        if r.get("prediction_count"):
            lines.append(f"after {r['prediction_count']} predictions")
        if r.get("dag_run_id"):
            lines.append(f"DAG run `{r['dag_run_id']}`")
        run.markdown("  \n".join(lines))
        done = []
        before, after = r.get("model_version_before"), r.get("model_version_after")
        if after:
            done.append(f"model `{before or '—'}` → `{after}`")
        elif before:
            done.append(f"model before: `{before}`")
        if r.get("gate_decision"):
            done.append(f"gate: **{r['gate_decision']}**")
        if r.get("data_version"):
            done.append(f"data `{str(r['data_version'])[:12]}`")
        if r.get("finished_at"):
            done.append(f"finished {_when(r['finished_at'])}")
        outcome.markdown("  \n".join(done) or ":gray[not started yet]")
        if r.get("skip_reason"):
            st.caption(f"Skipped: {r['skip_reason']}")
        if r.get("last_error"):
            st.caption(f":red[Last error: {r['last_error']}]")


def retrain_table(retrains: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in retrains:
        before, after = r.get("model_version_before"), r.get("model_version_after")
        rows.append(
            {
                "Request": r.get("id"),
                "State": STATE_BADGES.get(r.get("state", ""), r.get("state")),
                "Requested": _when(r.get("requested_at")),
                "Finished": _when(r.get("finished_at")),
                "Predictions": r.get("prediction_count"),
                "DAG run": r.get("dag_run_id") or "",
                "Data version": r.get("data_version") or "",
                "Model": f"{before or '—'} → {after}" if after else (before or ""),
                "Gate": r.get("gate_decision") or "",
                "Last error": r.get("last_error") or "",
            }
        )
    return pd.DataFrame(rows)


def _when(value: Any) -> str:
    if not value:
        return ""
    ts = pd.to_datetime(value, utc=True, errors="coerce")
    return "" if pd.isna(ts) else ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def recent_section(recent: list[dict[str, Any]] | None, error: BackendError | None) -> None:
    st.subheader("Recent predictions")
    if error is not None:
        ui.show_error(error)
        return
    if not recent:
        st.info("No predictions yet: classify a photo on the Upload page.", icon="🖼️")
        return
    per_row = 6
    for start in range(0, len(recent), per_row):
        cols = st.columns(per_row)
        for col, p in zip(cols, recent[start : start + per_row], strict=False):
            with col.container(border=True):
                thumb = ui.thumbnail(p["image_sha256"], st.session_state.get(ui.OPERATOR_KEY, ""))
                if thumb:
                    st.image(thumb, width="stretch")
                st.markdown(f"**{ui.class_title(p['label'])}** {p['confidence']:.0%}")
                confirmed = p.get("confirmed_label")
                if confirmed is None:
                    st.caption("not confirmed yet")
                elif confirmed == p["label"]:
                    st.caption(f":green[✔ confirmed {confirmed}]")
                else:
                    st.caption(f":orange[✎ corrected to {confirmed}]")
                st.caption(f"#{p['id']} · {_when(p.get('created_at'))[5:16]}")


def links_section() -> None:
    s = ui.settings()
    st.subheader("Tools")
    cols = st.columns(5)
    links = [
        ("MLflow", s.mlflow_ui_url, ":material/science:"),
        ("Airflow", s.airflow_ui_url, ":material/air:"),
        ("Prometheus", s.prometheus_url, ":material/query_stats:"),
        ("Grafana", s.grafana_url, ":material/dashboard:"),
        ("API docs", s.api_docs_url, ":material/api:"),
    ]
    for col, (name, url, icon) in zip(cols, links, strict=True):
        col.link_button(name, url, icon=icon, width="stretch", help=url)


title_col, button_col = st.columns([5, 1], vertical_alignment="bottom")
title_col.title("System")
button_col.button("Refresh", icon=":material/refresh:", key="system-refresh", width="stretch")

client = ui.client()
stats, stats_error = fetch(client.stats)
if isinstance(stats_error, BackendUnavailable) and stats_error.code in UNREACHABLE:
    ui.show_error(stats_error)
    links_section()
    st.stop()
model, model_error = fetch(client.model)
retrains, retrains_error = fetch(client.retrains)

model_section(model, model_error)
st.divider()
retrain_section(stats, retrains, (stats_error, retrains_error))
st.divider()
if ui.operator():
    recent_section(*fetch(client.recent_predictions, ui.settings().ui_recent_predictions))
    ui.operator_login("system")
else:
    st.subheader("Recent predictions")
    st.info("Users' photos, each request and raw errors are private: log in as an operator.", icon="🔒")
    ui.operator_login("system")
st.divider()
links_section()
