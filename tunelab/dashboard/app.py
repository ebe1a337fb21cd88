"""The Streamlit entry point: `tunelab dashboard` runs `streamlit run` on this file.

It opens the database read-only (TUNELAB_DB_URL), lists the registered pages that apply
to the job kinds present, and runs the selected one.
"""

from __future__ import annotations

import threading

import streamlit as st

from tunelab.dashboard import common, importance, queries, registry
from tunelab.schema.db import redact

st.set_page_config(page_title="tunelab", page_icon=":material/tune:", layout="wide")


@st.cache_resource(show_spinner=False)
def _preload() -> threading.Thread:
    """Once per server process: scikit-learn imported in the background, so the first
    parameter importance a user opens costs its fit, not the import."""
    thread = threading.Thread(target=importance.preload, name="preload-sklearn", daemon=True)
    thread.start()
    return thread


_preload()

engine = common.engine_or_stop()
kinds, _ = queries.job_filters(engine)
pages = [p for p in registry.discover() if p.applies_to(kinds)]
nav = st.navigation(
    [
        st.Page(p.path, title=p.title, icon=p.icon or None, url_path=p.url_path, default=p.default)
        for p in pages
    ]
)
st.sidebar.caption(f"database (read-only): `{redact(common.db_url())}`")
nav.run()
