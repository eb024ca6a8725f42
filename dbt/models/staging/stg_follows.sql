-- Who follows whom right now; which lists said so, as booleans instead of 1/0.
select
    follower,
    followee,
    follow_time,
    first_seen_at,
    in_fans_list = 1 as in_fans_list,
    in_follows_list = 1 as in_follows_list
from {{ source('follow_etl', 'follows') }}
