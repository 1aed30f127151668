-- Sends the requests listed in a file, one per line, tab-separated:
--   METHOD  PATH  BODY  [Header: value]...
-- Arguments (after wrk's --): FILE MODE THREADS
--   random      every request is drawn uniformly from the whole file
--   sequential  thread k sends lines k, k+THREADS, k+2*THREADS, ... in order, so no line is sent
--               twice until a thread has used up its share; then it starts over
-- (once.lua adds a mode that stops as soon as every line has been answered.)
-- Each request is formatted once in init(), so wrk spends the same per request on every server.

local next_thread = 0

function setup(thread)
   thread:set("thread_index", next_thread)
   next_thread = next_thread + 1
end

local function split(line)
   local fields, start = {}, 1
   while true do
      local tab = string.find(line, "\t", start, true)
      if not tab then
         fields[#fields + 1] = string.sub(line, start)
         return fields
      end
      fields[#fields + 1] = string.sub(line, start, tab - 1)
      start = tab + 1
   end
end

local function format(fields)
   local headers = {}
   for name, value in pairs(wrk.headers) do
      headers[name] = value
   end
   for i = 4, #fields do
      local name, value = string.match(fields[i], "^([^:]+):%s*(.*)$")
      headers[name] = value
   end
   local body = fields[3]
   if body == "" then
      body = nil
   end
   return wrk.format(fields[1], fields[2], headers, body)
end

local requests, position, random_mode = {}, 0, false
count = 0 -- this thread's number of requests: global, for once.lua

function init(args)
   local file, threads = args[1], tonumber(args[3])
   random_mode = args[2] == "random"
   local line_number = 0
   for line in io.lines(file) do
      if random_mode or line_number % threads == thread_index then
         count = count + 1
         requests[count] = format(split(line))
      end
      line_number = line_number + 1
   end
   math.randomseed(os.time() + 7919 * thread_index)
end

function request()
   if random_mode then
      return requests[math.random(count)]
   end
   position = position % count + 1
   return requests[position]
end
