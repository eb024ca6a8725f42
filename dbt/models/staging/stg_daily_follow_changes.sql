-- Edges gained and lost per account, list type and UTC day, with the net change.
select
    account,
    follow_type,
    case follow_type when 1 then 'fans' when 2 then 'follows' when 3 then 'mutual' end
        as follow_type_name,
    day,
    gained,
    lost,
    gained - lost as net
from {{ source('follow_etl', 'daily_follow_changes') }}
