"""The HTML page ``dvc plots show`` fills, with Vega inlined, so the plots render offline.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN: offline every plot is blank. The page
here (``.dvc/offline.html``, named by ``.dvc/config``'s ``plots.html_template``) carries the three libraries
as one inline script, the bundle ``vl-convert-python`` ships (pinned in requirements.lock), with the Vega-Lite
5 its DVC templates are written for. ``make setup`` writes it from the installed package (it is generated,
not committed: git ignores it); ``make plots-page`` rewrites it.
"""
from __future__ import annotations

import sys
from pathlib import Path

PAGE = Path(".dvc/offline.html")
VEGA_LITE = "5.21"          # DVC's templates (and .dvc/plots/bar_ci.json) declare the Vega-Lite 5 schema

_HTML = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega {vega}, Vega-Lite {vega_lite}, Vega-Embed {embed}, inlined by cim.plots_page (vl-convert-python) -->
    <script type="text/javascript">
(function () {{
{bundle}
}})();
    </script>
    <style>
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def page() -> str:
    """The page's text: DVC's placeholders ``{refresh_tag}`` and ``{plot_divs}``, no ``{scripts}`` (the CDN
    tags DVC would put there are left out)."""
    import vl_convert as vlc

    bundle = vlc.javascript_bundle(vl_version=VEGA_LITE)
    for bad in ("</script", "{plot_divs}", "{scripts}", "{refresh_tag}"):
        if bad in bundle:
            raise ValueError(f"the Vega bundle contains {bad!r}: it cannot be inlined in DVC's page")
    return _HTML.format(refresh_tag="{refresh_tag}", vega=vlc.get_vega_version(), vega_lite=VEGA_LITE,
                        embed=vlc.get_vega_embed_version(), bundle=bundle)


def main(argv: list[str] | None = None) -> int:
    path = Path((argv or sys.argv[1:] or [str(PAGE)])[0])
    path.write_text(page(), encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
