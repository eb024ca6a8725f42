"""One process's work on a run: a coordinator, fetcher threads and writer lanes.

    coordinator (claims, leases, the end)  --Claim-->  tasks queue
      -> N fetchers (extract + transform, paced; etl.crawl.fetcher)
      -> per-lane queues (bounded: memory stays flat)
      -> writer lanes (etl.crawl.writer): one transaction per batch = lease check, rows,
         cursors and endings of every list in it
      --Ended committed-->  coordinator forgets the claim

The pages of one list are fetched in order by one thread and written in that order by one
lane, so a list's cursor in the database always follows the rows stored for it. How a list's
crawl ends is an Outcome, and one table (etl.crawl.outcome) says what each does.

Around it, for the use cases (etl.sync): ``presence`` (a process registered on a job, its
heartbeat, its leaving), ``session`` (one process's crawl of a run: the ``Plan`` it follows,
its share of the run's budget, the lister alongside, the run's counters stored at the end),
``progress`` (the snapshots a sync reports) and ``lister`` (the run's lists added, sized).
"""

from etl.crawl.coordinator import Crawl
from etl.crawl.messages import Rate, Tally
from etl.crawl.outcome import EFFECTS, Outcome
from etl.crawl.session import Plan, Session

__all__ = ["EFFECTS", "Crawl", "Outcome", "Plan", "Rate", "Session", "Tally"]
