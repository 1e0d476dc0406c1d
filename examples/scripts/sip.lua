--!native
-- SIP over TCP (RFC 3261), framed for Switchyard.
--
--   INVITE sip:bob@example.com SIP/2.0\r\n
--   Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n
--   Call-ID: a84b4c76e66710\r\n          (compact form: `i:`)
--   CSeq: 314159 INVITE\r\n
--   Content-Length: 5\r\n                (compact form: `l:`; required over TCP)
--   \r\n
--   hello
--
-- * A message is its start line and headers up to the blank line, then Content-Length bytes
--   of body. Header names are matched without regard to case, compact forms included.
-- * The session key is the Call-ID: every message of a call goes to the server that took
--   its INVITE, and what a server sends unasked (its BYE) goes to the client that owns the
--   call.
-- * The correlation id is the whole CSeq value (`314159 INVITE`), matched as sent
--   (`by_id_as_sent`) within its Call-ID: the proxy rewrites nothing, so an ACK keeps its
--   INVITE's number, as SIP requires.
-- * Answers: a 1xx is provisional (forwarded; the request waits on), a 2xx-6xx final.
--   ACK is one-way. A server's own request (REQUEST) goes to the call's owner, and the
--   client's answer to it (ANSWER) back to the server that holds the call.
-- * A BYE and its final answer end the session: the pin is released. So do an OPTIONS and
--   a MESSAGE outside a dialog (nothing follows them). A call that fails before it is set
--   up (a 486 to its INVITE) keeps its pin until the TTL: its ACK still needs it, and a
--   re-INVITE's failure, which looks the same, must not end the call.
-- * Keep-alives (RFC 5626): a CRLFCRLF ping is answered with a CRLF pong by the proxy
--   itself, and a pong is dropped; an OPTIONS with `Max-Forwards: 0` (a ping addressed to the
--   next hop) is answered 200 by the proxy. Other OPTIONS go to the servers.
-- * A request that fails (its server down, timed out) is answered 503, built from the
--   request's own Via, From, To, Call-ID and CSeq.

-- Whether the request's To header carries a tag: it is inside a dialog.
local function in_dialog(data: buffer, first: number, hend: number): boolean
	local to_off, to_len = header(data, first, hend, "to", "t")
	return to_off ~= nil and find(data, to_off, to_off + to_len, ";tag=") ~= nil
end

local function scan(data: buffer, len: number, out: buffer)
	local pos, n = 0, 0
	while pos < len and n < RECORDS do
		if u8(data, pos) == 13 then
			-- Keep-alive: CRLFCRLF is a ping, a lone CRLF its pong.
			if len - pos >= 4 and str(data, pos, 4) == "\r\n\r\n" then
				frame(out, n, 4)
				mark(out, n, LOCAL)
				n += 1
				pos += 4
				continue
			end
			if len - pos >= 2 and u8(data, pos + 1) == 10 then
				frame(out, n, 2)
				mark(out, n, DROP)
				n += 1
				pos += 2
				continue
			end
			return n -- a CR alone so far
		end
		local head_end = find(data, pos, len, "\r\n\r\n")
		if not head_end then
			return n -- headers incomplete (max_frame_size bounds them)
		end
		local first = find(data, pos, head_end + 2, "\r\n") + 2 -- after the start line
		local hend = head_end + 2
		local cl_off, cl_len = header(data, first, hend, "content-length", "l")
		if not cl_off then
			return nil, "a SIP message over TCP must have a Content-Length header"
		end
		local body = int(data, cl_off, cl_len)
		if not body then
			return nil, "Content-Length is not a number"
		end
		local size = head_end + 4 - pos + body
		if len - pos < size then
			return n, size
		end
		local key_off, key_len = header(data, first, hend, "call-id", "i")
		if not key_off or key_len == 0 then
			return nil, "a SIP message must have a Call-ID header"
		end
		local id_off, id_len = header(data, first, hend, "cseq")
		if not id_off or id_len == 0 then
			return nil, "a SIP message must have a CSeq header"
		end
		local sp = find(data, id_off, id_off + id_len, " ")
		local method = if sp then str(data, sp + 1, id_off + id_len - sp - 1) else ""
		local flags
		if str(data, pos, 8) == "SIP/2.0 " then
			local code = int(data, pos + 8, 3)
			if not code or code < 100 then
				return nil, "a SIP status line must have a three-digit code"
			end
			flags = ANSWER
			if code < 200 then
				flags += PROVISIONAL
			elseif method == "BYE" then
				flags += ENDS_SESSION
			end
		else
			local verb_end = find(data, pos, first, " ")
			local verb = if verb_end then str(data, pos, verb_end - pos) else ""
			flags = REQUEST
			if verb == "ACK" then
				flags += ONE_WAY
			elseif verb == "BYE" then
				flags += ENDS_SESSION
			elseif verb == "OPTIONS" then
				local mf_off, mf_len = header(data, first, hend, "max-forwards")
				if mf_off and int(data, mf_off, mf_len) == 0 then
					flags = LOCAL
				elseif not in_dialog(data, first, hend) then
					flags += ENDS_SESSION
				end
			elseif verb == "MESSAGE" and not in_dialog(data, first, hend) then
				flags += ENDS_SESSION
			end
		end
		frame(out, n, size, key_off, key_len, id_off, id_len)
		mark(out, n, flags)
		n += 1
		pos += size
	end
	return n
end

-- The headers a response copies from its request (RFC 3261 8.2.6.2), by full and compact
-- name.
local COPIED = {
	via = true, v = true, from = true, f = true, to = true, t = true,
	["call-id"] = true, i = true, cseq = true,
}

-- A response to `request` with `status`, copying its Via, From, To, Call-ID and CSeq, and
-- extra header lines `extra`; a To without a tag gets one.
local function respond(request: string, status: string, extra: string): string
	local head = string.match(request, "^(.-\r\n)\r\n") or request
	local lines = { "SIP/2.0 " .. status }
	for line in string.gmatch(head, "([^\r\n]*)\r\n") do
		local name = string.match(line, "^([^:%s]+)%s*:")
		local lower = if name then string.lower(name) else nil
		if lower and COPIED[lower] then
			if (lower == "to" or lower == "t") and not string.find(string.lower(line), ";%s*tag=") then
				line ..= ";tag=switchyard"
			end
			table.insert(lines, line)
		end
	end
	table.insert(lines, extra .. "Content-Length: 0")
	return table.concat(lines, "\r\n") .. "\r\n\r\n"
end

return {
	correlation = "by_id_as_sent",
	scan = scan, -- answers have the same shape

	-- A failed request (its server down or gone, no answer in time) gets a 503 in its
	-- place; the client's other calls on the connection go on.
	error_reply = function(id: string?, key: string?, reason: string, request: string?): string?
		if not request then
			return nil -- its bytes were not kept: dropped, counted and logged
		end
		local why = string.gsub(reason, '[\r\n"]', " ")
		return respond(request, "503 Service Unavailable", `Warning: 399 switchyard "{why}"\r\n`)
	end,

	-- What the proxy answers itself: keep-alive pings, and OPTIONS addressed to it.
	local_reply = function(message: string): string?
		if message == "\r\n\r\n" then
			return "\r\n"
		end
		return respond(message, "200 OK", "")
	end,
}
