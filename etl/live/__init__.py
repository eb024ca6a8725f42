"""`follow-etl listen`: Tencent's follow callbacks received, checked and applied to the graph."""
