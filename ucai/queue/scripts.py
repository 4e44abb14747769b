"""Every Lua script of the queue. Each is one atomic step in Redis; the comment above it says why it has to be.

Keys: the job `ucai:job:{id}` (hash: status, counters, `outcome`), its lease `ucai:job:{id}:lease` (the owner's
token, with an expiry), the batch `ucai:batch:{id}` (meta) with `:ids`, `:results`, `:failed`; the stream; the
constitutions the jobs name, `ucai:constitution:{hash}` (`constitutions.py`).
"""
from __future__ import annotations

# Create a job once per id, and (given the stream) queue it in the same step. Why atomic: the record, its expiry and
# its stream entry appear together or not at all, so concurrent submits of one idempotency key find the record and
# queue nothing more, a reader never sees a record without its fields, and a crash leaves neither a record without
# expiry nor one that was never queued. A record without `enqueued` (written by a version that queued in a second
# step and died in between) is queued now.
# KEYS: job[, stream]. ARGV: now, kind, request ('' for none: a queued job's request is in its stream entry only),
# owner, ttl_s[, message]. Returns 1 when created.
SUBMIT = """
if redis.call('HGET', KEYS[1], 'enqueued') then return 0 end
local existed = redis.call('EXISTS', KEYS[1]) == 1
if existed and #KEYS == 1 then return 0 end
if #KEYS == 2 then redis.call('XADD', KEYS[2], '*', 'data', ARGV[6]) end
if existed then
  redis.call('HSET', KEYS[1], 'enqueued', 1)
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'kind', ARGV[2], 'created_at', ARGV[1], 'updated_at', ARGV[1],
           'attempts', 0, 'completions', 0, 'owner', ARGV[4])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'request', ARGV[3]) end
if #KEYS == 2 then redis.call('HSET', KEYS[1], 'enqueued', 1) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# Take the job's lease. Why atomic: "the job has no outcome yet" and "nobody else holds it" must hold at one instant;
# checked apart, a worker finishing (and releasing) in between would let this one run the job a second time. The
# same token takes it again (a job retried by its own worker after Redis was away).
# KEYS: lease, job. ARGV: token, ttl_ms. Returns 'ours', 'held' (another worker runs it) or 'done' (it has an outcome).
ACQUIRE = """
if redis.call('HEXISTS', KEYS[2], 'outcome') == 1 then return 'done' end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'ours' end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'ours'
end
return 'held'
"""

# Heartbeat: renew the lease, and reset the idle time of the job's stream entry (XCLAIM to this consumer). Why
# atomic: only the owner may renew or claim, and lease and entry are renewed at the same instant, so the entry becomes
# reclaimable only once the lease has run out, and a worker that lost its lease never claims the entry back from the
# worker now running the job.
# KEYS: lease, stream. ARGV: token, ttl_ms, group, consumer, entry id ('' for none). Returns 1 while ours, else 0.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[5] ~= '' then redis.pcall('XCLAIM', KEYS[2], ARGV[3], ARGV[4], 0, ARGV[5], 'JUSTID') end
return 1
"""

# Give the lease up (a stopping worker hands its job back). Why atomic: compare-and-delete, so an expired lease that
# another worker took meanwhile is not deleted from under it. KEYS: lease. ARGV: token. Returns 1 when released.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Write one batch record's outcome (a Lua function, part of RECORD and FINISH). Why atomic: exactly one of `:results`
# / `:failed` gets the record, once, however its writes race; and the batch turns `completed` when the record written
# is its last one, decided in the same step — so no reader sees a completed batch with a record pending, and a cancel
# (one HSET of the status) can never land between the check and the write and be overwritten: a cancelled batch
# stays cancelled.
_RECORD_FUNCTION = """
local function record(meta, results, failed, id, payload, ok, now, ttl)
  if redis.call('HEXISTS', results, id) == 1 or redis.call('HEXISTS', failed, id) == 1 then return 0 end
  redis.call('HSET', ok == '1' and results or failed, id, payload)
  redis.call('EXPIRE', results, ttl)
  redis.call('EXPIRE', failed, ttl)
  local total = tonumber(redis.call('HGET', meta, 'total') or '0')
  if redis.call('HGET', meta, 'status') == 'running'
      and redis.call('HLEN', results) + redis.call('HLEN', failed) >= total then
    redis.call('HSET', meta, 'status', 'completed', 'finished_at', now)
  end
  return 1
end
"""

# KEYS: meta, results, failed. ARGV: record id, payload, ok ('1'/'0'), now, ttl_s. Returns 1 when written.
RECORD = _RECORD_FUNCTION + "return record(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])\n"

# A job's end: its one outcome, final status and `completions`, its batch record (and the batch's completion), the
# lease dropped. Why atomic: compare-and-write — a worker whose lease ran out (another worker now runs the job) writes
# nothing; of two writers only the first writes; and the job's outcome and its batch record never disagree.
# KEYS: job, lease[, meta, results, failed]. ARGV: token, outcome JSON, ok, now, error JSON[, record id, payload, ttl].
# Returns 1 when written, 0 when the job already had an outcome, -1 when the lease is not ours, -2 when the job is
# gone (expired).
FINISH = _RECORD_FUNCTION + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
if redis.call('HEXISTS', KEYS[1], 'outcome') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'outcome', ARGV[2], 'status', ARGV[3] == '1' and 'completed' or 'failed',
           'updated_at', ARGV[4], 'error', ARGV[5])
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'completions', 1) end
redis.call('DEL', KEYS[2])
if #KEYS == 5 then record(KEYS[3], KEYS[4], KEYS[5], ARGV[6], ARGV[7], ARGV[3], ARGV[4], ARGV[8]) end
return 1
"""

# Create a batch once per id. Why atomic: its meta (with `total`), its record list and their expiry appear at once, so
# a concurrent resubmit never sees a batch without its total and a crash leaves no key without expiry.
# KEYS: meta, ids. ARGV: ttl_s, n (meta field/value pairs), the n pairs, then the record ids. Returns 1 when created.
CREATE_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'running', unpack(ARGV, 3, 2 + 2 * n))
for i = 3 + 2 * n, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

# Trim the stream of acknowledged entries. Why atomic: what may go is decided from every consumer group's
# last-delivered id and oldest pending id at the same instant the entries go, so no entry that is undelivered (after
# a group's last-delivered id) or pending (delivered, not yet acknowledged: running, or to be reclaimed) is trimmed,
# however deliveries and acks race. Entries newer than the retention (ARGV[1] ms, Redis' clock) stay too. A stream
# without a group is never trimmed (nothing has read it).
# KEYS: stream. ARGV: retain_ms. Returns the number of entries trimmed.
TRIM_ACKED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local now = redis.call('TIME')
local min_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
local min_seq = 0
local function keep(ms, seq)
  if ms < min_ms or (ms == min_ms and seq < min_seq) then min_ms, min_seq = ms, seq end
end
for _, group in ipairs(groups) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] elseif group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  local ms, seq = parse(last)
  keep(ms, seq + 1)  -- the first entry this group has not been given
  local pending = redis.call('XPENDING', KEYS[1], name)
  if pending[1] > 0 then
    ms, seq = parse(pending[2])
    keep(ms, seq)  -- its oldest entry delivered and not acknowledged
  end
end
if min_ms < 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', min_ms, min_seq))
"""
