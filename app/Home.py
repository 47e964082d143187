"""Customer segments app: `streamlit run app/Home.py` from the repository root (`make app`).

This entry point only routes: each page is one file in app/views/. To add a page, write
`app/views/<page>.py` and add one `st.Page(...)` line to PAGES.
"""

from __future__ import annotations

import streamlit as st
import ui_common  # beside this file: `streamlit run` puts the entry point's folder on the path

st.set_page_config(page_title="Customer segments", page_icon="👥", layout="wide")

PAGES = [
    st.Page(
        "views/segment.py",
        title="Segment a customer",
        icon=":material/person_search:",
        default=True,
    ),
    st.Page("views/batch.py", title="Batch scoring", icon=":material/upload_file:"),
    st.Page("views/evaluation.py", title="Agent evaluation", icon=":material/fact_check:"),
    st.Page("views/variants.py", title="Agent variants", icon=":material/compare_arrows:"),
    st.Page("views/monitoring.py", title="Monitoring", icon=":material/monitor_heart:"),
]

page = st.navigation(PAGES)
ui_common.model_selector()  # shared by every page, above the page's own sidebar widgets
page.run()
