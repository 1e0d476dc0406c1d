--!native
-- The script docs/scripting.md builds step by step: a 2-byte big-endian length, a type byte,
-- then a body "key|" followed by a 4-byte request id.
return {
	correlation = "by_id",
	id_width = 4,
	scan = function(data: buffer, len: number, out: buffer)
		local pos, n = 0, 0
		while len - pos >= 2 and n < RECORDS do
			local size = 2 + u16be(data, pos)
			if len - pos < size then
				return n, size
			end
			local body = pos + 3
			local bar = find(data, body, pos + size, "|")
			if not bar or bar + 5 > pos + size then
				return nil, `message at {pos} has no key|id`
			end
			frame(out, n, size, body, bar - body, bar + 1, 4)
			n += 1
			pos += size
		end
		return n
	end,
}
