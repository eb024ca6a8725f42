"""Everything that knows Tencent's follow API, and the only HTTP to Tencent.

- client: ``FollowClient``, the one caller of the endpoint (paced, signed, retried);
- pacer: the budget's spacing of calls, slowed by a rate-limit answer;
- signing: the transport that adds the UserSig below httpx, so no log sees it;
- usersig: TLSSigAPIv2 UserSigs, generated and verified;
- codes: the code table (what each ErrorCode means, which are transient, RATE_LIMIT_CODES);
- exact_json: JSON bytes -> Python without rounding an integer;
- page: the page contract (a ``Page`` exists only if the answer was well-formed);
- text, profile, rows: a page's text, profiles and items as the tables hold them (pure);
- info: follow_get_info answers, one per account; sizes: the lists' sizes for the claims.

Metrics' push to a Pushgateway (etl.pushgateway) is the one other HTTP client in etl.
"""
