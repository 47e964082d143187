"""The segment map's browser side: a Streamlit component folder and the arguments it draws.

st.plotly_chart's element id hashes the figure, so a moved star mounted a new chart on every
Predict (~2/3 of Chromium's CPU per click, bench/README.md). The component keeps one frame and
redraws it with Plotly.react; only its arguments change.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import plotly
from plotly.io.json import to_json_plotly

FRONTEND = Path(__file__).with_name("segment_map_frontend")
PLOTLY_JS = Path(plotly.__file__).with_name("package_data") / "plotly.min.js"


@dataclass(frozen=True)
class MapParts:
    """A figure dict as the JSON the component draws: the traces (sent unchanged while the
    model is the same, named by `key`) and the layout."""

    data: str
    layout: str
    key: str


def map_parts(spec: dict) -> MapParts:
    """`spec`'s traces and layout as JSON, once per model (numpy arrays included)."""
    data = to_json_plotly({"data": spec["data"]})
    return MapParts(data, to_json_plotly(spec["layout"]), hashlib.sha256(data.encode()).hexdigest())


def render_args(parts: MapParts, star: dict | None) -> dict:
    """The component's arguments: the map's parts and the customer's star trace, if any."""
    return {
        "base": parts.data,
        "base_key": parts.key,
        "layout": parts.layout,
        "star": None if star is None else to_json_plotly(star),
    }


def component_dir(cache: Path) -> Path:
    """A folder under `cache` holding the component's page and the plotly package's own
    plotly.min.js gzipped, made once per page and plotly version.

    Gzipped here, once: Streamlit's server gzips every component file on every request (level
    9: ~0.2 s of CPU for plotly's 4.8 MB, per session), but passes application/gzip through;
    the page inflates it with the browser's DecompressionStream. Copied, not linked: Streamlit
    serves no file whose real path leaves the component folder.
    """
    page = (FRONTEND / "index.html").read_bytes()
    tag = hashlib.sha256(page + plotly.__version__.encode()).hexdigest()[:16]
    target = cache / f"segment-map-{tag}"
    if (target / "index.html").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=cache, prefix=".segment-map-"))
    (building / "plotly.min.js.gz").write_bytes(gzip.compress(PLOTLY_JS.read_bytes(), mtime=0))
    (building / "index.html").write_bytes(page)
    try:
        os.rename(building, target)  # atomic: a session never sees half a folder
    except OSError:  # another session made it first
        shutil.rmtree(building, ignore_errors=True)
        if not (target / "index.html").is_file():
            raise
    return target
