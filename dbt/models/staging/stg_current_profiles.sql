-- The newest stored profile version of each user. content_digest is bookkeeping for the sync.
select
    user_id,
    profile_sequence,
    nick,
    gender,
    birthday,
    location,
    self_signature,
    allow_type,
    language,
    image,
    msg_settings,
    admin_forbid_type,
    level,
    role,
    tags,
    tags_raw,
    first_seen_at,
    run_id
from {{ source('follow_etl', 'current_profiles') }}
