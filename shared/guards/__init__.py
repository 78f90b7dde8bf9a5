"""What stands between the jobs and a provider, shared by every worker through Redis:
its circuit breaker (`breaker`) and its rate and concurrency limits (`ratelimit`)."""
