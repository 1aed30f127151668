-- requests.lua's sequential mode, in which each thread stops once it has had as many answers as
-- it has lines, and says so: a warm-up that reads every line (about) once, however fast or slow
-- the server answers. wrk itself runs for its whole duration: bench/wrk.py interrupts it once
-- every thread is done. A script of its own, as wrk parses every response of a script with response().

local here = string.match(string.sub(debug.getinfo(1, "S").source, 2), "^(.*/)") or "./"
dofile(here .. "requests.lua")

local answered = 0

function response()
   answered = answered + 1
   if answered == count then
      io.write("share answered\n")
      io.flush()
      wrk.thread:stop()
   end
end
