"""Serving the registered champion: resolve and load it (model), score an uploaded CSV (batch),
and draw the segments (charts). The Streamlit app in app/ renders these."""
