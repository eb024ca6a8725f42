-- Edges listed right now, with the list type spelled out.
select
    account,
    follow_type,
    case follow_type when 1 then 'fans' when 2 then 'follows' when 3 then 'mutual' end
        as follow_type_name,
    to_account,
    follow_time,
    first_seen_at,
    time_provisional
from {{ source('follow_etl', 'current_follow_edges') }}
