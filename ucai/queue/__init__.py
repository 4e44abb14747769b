"""The job queue: the Redis-stream broker (`broker`), a job's life — status, outcome (`lifecycle`), its lease (`lease`)
— batches (`batches`), the constitutions jobs name by hash (`constitutions`) and what keeps Redis bounded (`bounds`);
every Lua script in `scripts`."""
from ucai.queue.batches import BatchStore
from ucai.queue.broker import DELIVERY_LABEL, MSG_ID_LABEL, ReclaimingStreamBroker, id_secret, job_id_for, make_broker
from ucai.queue.lease import JobLease, LeaseLost, lease_ttl_ms
from ucai.queue.lifecycle import FINAL, JobOutcome, JobStatus, JobStore

__all__ = ["DELIVERY_LABEL", "FINAL", "MSG_ID_LABEL", "BatchStore", "JobLease", "JobOutcome", "JobStatus", "JobStore",
           "LeaseLost", "ReclaimingStreamBroker", "id_secret", "job_id_for", "lease_ttl_ms", "make_broker"]
