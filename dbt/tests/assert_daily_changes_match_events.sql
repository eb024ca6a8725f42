-- Every change event is counted once per day: a row here means the day totals lost some.
with summed as (
    select coalesce(sum(gained + lost), 0) as n from {{ ref('stg_daily_follow_changes') }}
),
recorded as (
    select count(*) as n from {{ source('follow_etl', 'follow_edge_events') }}
)
select summed.n as summed, recorded.n as recorded
from summed cross join recorded
where summed.n <> recorded.n
