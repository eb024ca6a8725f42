"""The HTML report of a database: data (the queries), html (the page), charts and svg.

    data   -> ReportData: aggregates read from the views and run tables (collect)
    charts -> the report's five charts from a ReportData, drawn with svg's shapes
    html   -> the page: headline numbers, the charts, the latest runs (render)

Imports go one way (html -> charts -> svg; html and charts -> data); svg knows nothing of
the report.
"""

from etl.report.data import ReportData, collect
from etl.report.html import CHART_IDS, build_report, render

__all__ = [
    "CHART_IDS",
    "ReportData",
    "build_report",
    "collect",
    "render",
]
