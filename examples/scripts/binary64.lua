--!native
-- A length-prefixed binary protocol with a 64-bit session key (the demo protocol):
--
--   u32 BE body length | u64 BE session key | u32 BE request id | body…
--
-- The same protocol as the native codec in ../orders.toml, so the two can be compared.

local HEADER = 16

return {
	correlation = "by_id",
	id_width = 4,

	scan = function(data: buffer, len: number, out: buffer)
		local pos, n = 0, 0
		while len - pos >= 4 and n < RECORDS do
			local size = 4 + u32be(data, pos)
			if size < HEADER then
				return nil, `frame of {size} bytes is shorter than its {HEADER}-byte header`
			end
			if len - pos < size then
				return n, size -- the next frame needs `size` bytes: don't call again before
			end
			frame(out, n, size, pos + 4, 8, pos + 12, 4) -- key: 8 bytes at 4, id: 4 bytes at 12
			n += 1
			pos += size
		end
		return n
	end,
}
