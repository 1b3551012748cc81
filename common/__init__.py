"""The small library every app uses: file storage (storage), the Redis client (redis), phone numbers (phone).
It imports no app of the project (tests/test_architecture.py: it is the lowest layer)."""
