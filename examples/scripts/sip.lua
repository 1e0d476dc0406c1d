--!native
-- A SIP-like text protocol over TCP: header lines, a blank line, then Content-Length bytes
-- of body. The session key is the Call-ID header; requests and answers are matched by the
-- number in the CSeq header, which the proxy rewrites on shared backend connections.
--
--   INVITE sip:bob@example.com SIP/2.0\r\n
--   Call-ID: a84b4c76e66710\r\n
--   CSeq: 314159 INVITE\r\n
--   Content-Length: 5\r\n
--   \r\n
--   hello

-- Offset and length of a header's value in data[from, to), skipping spaces after the colon.
local function value(data: buffer, from: number, to: number, name_len: number)
	local v = from + name_len
	while v < to and readu8(data, v) == 32 do
		v += 1
	end
	return v, to - v
end

local function scan(data: buffer, len: number, out: buffer)
	local pos, n = 0, 0
	while pos < len and n < RECORDS do
		local head_end = find(data, pos, len, "\r\n\r\n")
		if not head_end then
			return n -- headers incomplete
		end
		local key_off, key_len, id_off, id_len, body = nil, 0, nil, 0, 0
		local line = find(data, pos, head_end + 2, "\r\n") -- skip the request/status line
		while line and line < head_end do
			local s = line + 2
			local e = find(data, s, head_end + 2, "\r\n") or head_end
			if e - s > 8 and str(data, s, 8) == "Call-ID:" then
				key_off, key_len = value(data, s, e, 8)
			elseif e - s > 5 and str(data, s, 5) == "CSeq:" then
				local v, vlen = value(data, s, e, 5)
				local sp = find(data, v, v + vlen, " ") or (v + vlen)
				id_off, id_len = v, sp - v
			elseif e - s > 15 and str(data, s, 15) == "Content-Length:" then
				local v, vlen = value(data, s, e, 15)
				body = int(data, v, vlen)
				if not body then
					return nil, "Content-Length is not a number"
				end
			end
			line = e
		end
		local size = head_end + 4 - pos + body
		if len - pos < size then
			return n, size
		end
		frame(out, n, size, key_off, key_len, id_off, id_len)
		n += 1
		pos += size
	end
	return n
end

return {
	correlation = "by_id",
	id_format = "text",
	scan = scan, -- answers have the same shape
}
