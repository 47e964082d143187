"""DVC's plots page, offline: an HTML template with Vega, Vega-Lite and vega-embed inlined.

`dvc plots show` normally writes a page that loads the three libraries from a CDN (blank with no
network). `.dvc/config` points `plots.html_template` at the page built here from the exact npm
versions locked in vendor/vega (`make install` runs `npm ci` there, then `custseg plots
template`), so dvc_plots/index.html is one self-contained file.
"""

from __future__ import annotations

from pathlib import Path

from custseg.errors import UserError
from custseg.io import write_text_atomic

VENDOR = Path("vendor/vega")
TEMPLATE = Path(".dvc/plots/offline.html")  # .dvc/config: plots.html_template = plots/offline.html
# Load order matters: vega-lite and vega-embed expect the globals of the ones before them.
BUNDLES = (
    "vega/build/vega.min.js",
    "vega-lite/build/vega-lite.min.js",
    "vega-embed/build/vega-embed.min.js",
)
# DVC fills these by plain replacement; a bundle that contained one would be corrupted.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

# SVG (axis titles are text a test can read) and no action menu (its links leave the machine).
EMBED_DEFAULTS = """
const embedWithDefaults = window.vegaEmbed;
window.vegaEmbed = (el, spec, opt) =>
  embedWithDefaults(el, spec, Object.assign({renderer: "svg", actions: false}, opt));
"""

PAGE = """<!DOCTYPE html>
<html>
<head>
  {{refresh_tag}}
  <meta charset="utf-8">
  <title>DVC plots: custseg</title>
{scripts}
  <style>
    body {{ font-family: sans-serif; }}
    table {{ border-spacing: 15px; }}
  </style>
</head>
<body>
  {{plot_divs}}
</body>
</html>
"""


def inline_script(code: str) -> str:
    # A literal "</script" inside the code would end the element early.
    return "<script>\n" + code.replace("</script", "<\\/script") + "\n</script>"


def offline_template(node_modules: Path) -> str:
    """The page with the three bundles from `node_modules` inlined, for dvc's html_template."""
    scripts = []
    for bundle in BUNDLES:
        path = node_modules / bundle
        try:
            code = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{path}: not found; run `make install` (npm ci in {VENDOR})") from None
        if any(marker in code for marker in PLACEHOLDERS):
            raise UserError(f"{path}: contains a DVC template placeholder; cannot inline it")
        scripts.append(inline_script(code))
    scripts.append(inline_script(EMBED_DEFAULTS))
    return PAGE.format(scripts="\n".join(scripts))


def write_template(node_modules: Path = VENDOR / "node_modules", out: Path = TEMPLATE) -> Path:
    write_text_atomic(out, offline_template(node_modules))
    return out
