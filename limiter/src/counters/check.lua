-- One limiter check, atomically, in one round trip. Same arithmetic as `evaluate` in
-- counters.rs.
--
-- KEYS: the counters. ARGV[1]: now (µs since the epoch); ARGV[2]: hits (0 only reads); then
-- three arguments per key: 'r' (rate), count, period (µs) — or 'q' (quota), count, window
-- end (µs).
--
-- Returns one {allowed, remaining, reset (µs), retry after (µs)} per key. Counters are
-- written only when every key admits the hits; a refused check reports what each counter had
-- before it.
local now = tonumber(ARGV[1])
local hits = tonumber(ARGV[2])
local results = {}
local writes = {}
local before = {}
local admitted = true

for i, key in ipairs(KEYS) do
  local kind = ARGV[i * 3]
  local count = tonumber(ARGV[i * 3 + 1])
  local param = tonumber(ARGV[i * 3 + 2])
  if kind == 'r' then
    local period = param
    local interval = math.max(1, math.floor(period / count))
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local new_tat = tat + interval * hits
    before[i] = math.max(0, math.floor((period - (tat - now)) / interval))
    if new_tat - now <= period then
      results[i] = {1, math.floor((period - (new_tat - now)) / interval), new_tat - now, 0}
      -- Kept until fully drained, then Redis forgets it.
      writes[i] = {new_tat, math.floor((new_tat - now) / 1000) + 1}
    else
      admitted = false
      results[i] = {0, before[i], tat - now, new_tat - now - period}
    end
  else
    local used = tonumber(redis.call('GET', key) or 0)
    local reset = math.max(0, param - now)
    before[i] = math.max(0, count - used)
    if used + hits <= count then
      results[i] = {1, count - used - hits, reset, 0}
      -- Kept a minute past the window's end, then Redis forgets it.
      writes[i] = {used + hits, math.floor(reset / 1000) + 60000}
    else
      admitted = false
      results[i] = {0, before[i], reset, reset}
    end
  end
end

if admitted then
  if hits > 0 then
    for i, key in ipairs(KEYS) do
      redis.call('SET', key, string.format('%.0f', writes[i][1]), 'PX', writes[i][2])
    end
  end
else
  for i = 1, #KEYS do
    results[i][2] = before[i]
  end
end
return results
