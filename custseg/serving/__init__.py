"""Serving the registered champion: resolve and load it (model), the rules every scored value
must pass (validation), score an uploaded CSV (batch), answer REST requests (rest), and draw the
segments (charts). The Streamlit app in app/ renders these."""
