--!native
-- A TLV protocol: each message is a u32 BE length of what follows, then TLVs of
-- u8 type | u16 BE length | value. The session key is the value of TLV type 1, the request
-- id the value of TLV type 2 (4 bytes); other types are carried through untouched.

local KEY, ID = 1, 2

return {
	correlation = "by_id",
	id_width = 4,

	scan = function(data: buffer, len: number, out: buffer)
		local pos, n = 0, 0
		while len - pos >= 4 and n < RECORDS do
			local size = 4 + u32be(data, pos)
			if len - pos < size then
				return n, size
			end
			local key_off, key_len, id_off = nil, 0, nil
			local t = pos + 4
			local stop = pos + size
			while t < stop do
				if stop - t < 3 then
					return nil, "truncated TLV header"
				end
				local typ, vlen = u8(data, t), u16be(data, t + 1)
				if t + 3 + vlen > stop then
					return nil, `TLV type {typ} of {vlen} bytes overruns its message`
				end
				if typ == KEY then
					key_off, key_len = t + 3, vlen
				elseif typ == ID then
					if vlen ~= 4 then
						return nil, "the id TLV must be 4 bytes"
					end
					id_off = t + 3
				end
				t += 3 + vlen
			end
			frame(out, n, size, key_off, key_len, id_off, id_off and 4 or 0)
			n += 1
			pos = stop
		end
		return n
	end,
}
