-- Current fans, follows and mutual follows per crawled account (zeros included).
select
    account,
    fans,
    follows,
    mutual
from {{ source('follow_etl', 'account_follow_counts') }}
