-- Test module: behaves like a server with an idle-client check (Openfire's "Disconnect clients
-- after they have been idle", Prosody community's mod_pinger): every `idle_pinger_interval`
-- seconds it pings each bound c2s session from the server's domain (XEP-0199) and closes
-- the sessions that do not answer within `idle_pinger_timeout` seconds.
local st = require "util.stanza";
local interval = module:get_option_number("idle_pinger_interval", 2);
local timeout = module:get_option_number("idle_pinger_timeout", 2);
local host_sessions = prosody.hosts[module.host].sessions;
local seq = 0;

module:add_timer(interval, function()
	for _, user in pairs(host_sessions) do
		for _, session in pairs(user.sessions or {}) do
			if session.full_jid then
				seq = seq + 1;
				local iq = st.iq({ type = "get", to = session.full_jid, from = module.host, id = "idle-ping-" .. seq })
					:tag("ping", { xmlns = "urn:xmpp:ping" });
				local jid = session.full_jid;
				module:send_iq(iq, nil, timeout):next(function()
					module:log("info", "idle ping answered by %s", jid);
				end, function(err)
					module:log("info", "idle ping to %s unanswered (%s): disconnecting", jid, tostring(err));
					session:close({ condition = "connection-timeout", text = "no answer to ping" });
				end);
			end
		end
	end
	return interval;
end);
