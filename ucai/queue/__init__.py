"""The job queue: the Redis-stream broker (`broker`) and a job's life — status, outcome, batches (`lifecycle`)."""
from ucai.queue.broker import MSG_ID_LABEL, ReclaimingStreamBroker, id_secret, job_id_for, make_broker
from ucai.queue.lifecycle import FINAL, BatchStore, JobOutcome, JobStatus, JobStore

__all__ = ["FINAL", "MSG_ID_LABEL", "BatchStore", "JobOutcome", "JobStatus", "JobStore", "ReclaimingStreamBroker",
           "id_secret", "job_id_for", "make_broker"]
