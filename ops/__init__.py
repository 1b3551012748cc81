"""Process tooling: the supervisor `./run up` starts everything under (supervise) and the embedded Redis
(embedded_redis). Not a Django app; run with `python -m ops.<module>`."""
