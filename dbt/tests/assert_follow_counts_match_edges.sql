-- The per-account counts add up to the current edges: a row here means the two views disagree.
with counted as (
    select sum(fans + follows + mutual) as n from {{ ref('stg_account_follow_counts') }}
),
listed as (
    select count(*) as n from {{ ref('stg_current_follow_edges') }}
)
select counted.n as counted, listed.n as listed
from counted cross join listed
where coalesce(counted.n, 0) <> listed.n
