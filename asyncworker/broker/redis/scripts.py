"""The Lua scripts of the Redis transport: each makes one step atomic.

kombu takes a message with ``BRPOP`` and records it in ``unacked`` in a
second round trip; a worker killed between the two loses the message.
``FETCH`` pops and records in one step, so a message is always in a list or
in ``unacked``; a blocking ``BRPOP`` is only used to wait when every list is
empty, and the message it returns is recorded by ``FETCH`` at once (the one
remaining window, for a message that arrives while the worker is idle).
``RESTORE`` moves a message from ``unacked`` back to its lists only if it is
still there (and unchanged, when asked), so an ack, a requeue and any number
of restorers can race without a message being pushed twice.
The values written are kombu's: ``unacked`` maps the delivery tag to
``[envelope, exchange, routing_key]`` and ``unacked_index`` scores it with
the time of delivery (Unix seconds).
"""

from __future__ import annotations

#: KEYS: unacked, unacked_index, lists to pop from (in order).
#: ARGV: now, prefix of fallback tags, an item already popped ('' to pop), the
#: list it came from, how many to pop, then the queue name of each list (of the
#: given list, for an item). Each pop scans the lists from the first, so a batch
#: keeps priority order exactly.
#: Returns {list, item as popped, tag, ...}: empty when every list is empty.
FETCH = """
local function record(item, queue, fallback)
  local tag, ex, rk = fallback, '', ''
  local ok, msg = pcall(cjson.decode, item)
  local entry
  if ok and type(msg) == 'table' and type(msg['properties']) == 'table' then
    local p = msg['properties']
    if type(p['delivery_tag']) == 'string' and p['delivery_tag'] ~= '' then
      tag = p['delivery_tag']
    end
    local info = p['delivery_info']
    if type(info) == 'table' then
      if type(info['exchange']) == 'string' then ex = info['exchange'] end
      if type(info['routing_key']) == 'string' then rk = info['routing_key'] end
    end
    entry = '[' .. item .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']'
  else
    -- Not an envelope: kept as a JSON string, routed back to the list's queue.
    entry = '[' .. cjson.encode(item) .. ',"",' .. cjson.encode(queue) .. ']'
  end
  redis.call('ZADD', KEYS[2], ARGV[1], tag)
  redis.call('HSET', KEYS[1], tag, entry)
  return tag
end
if ARGV[3] ~= '' then
  return {ARGV[4], ARGV[3], record(ARGV[3], ARGV[6], ARGV[2])}
end
local out = {}
for n = 1, tonumber(ARGV[5]) do
  local item, src, queue
  for i = 3, #KEYS do
    item = redis.call('RPOP', KEYS[i])
    if item then src = KEYS[i]; queue = ARGV[i + 3]; break end
  end
  if not item then break end
  out[#out + 1] = src
  out[#out + 1] = item
  out[#out + 1] = record(item, queue, ARGV[2] .. ':' .. n)
end
return out
"""

#: KEYS: unacked, unacked_index, lists to push to.
#: ARGV: tag, expected unacked value ('' = any), item to push, 'L' (LPUSH) or 'R'.
#: Returns 1 when restored, 0 when no longer unacked, -1 when it changed.
RESTORE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if ARGV[2] ~= '' and current ~= ARGV[2] then return -1 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
local push = ARGV[4] == 'L' and 'LPUSH' or 'RPUSH'
for i = 3, #KEYS do redis.call(push, KEYS[i], ARGV[3]) end
return 1
"""

#: KEYS: binding table, binding deadlines. ARGV: member, exchange, ttl ms.
#: A binding of an expiring queue, as kombu 5.7 writes it: the table never
#: expires itself; its deadline (server clock) lets any consumer sweep it.
REFRESH_BINDING = """
redis.call('SADD', KEYS[1], ARGV[1])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', ms + tonumber(ARGV[3]), ARGV[2])
"""
