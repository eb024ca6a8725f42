"""follow-etl: crawl the Tencent Cloud Chat follow graph into a SQL database, resumably."""

__version__ = "0.1.0"
