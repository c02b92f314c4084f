-- Test module: fixed s2s routes instead of DNS. The test machine must not send DNS queries off
-- loopback, and Prosody resolves a remote domain (SRV, then A/AAAA) through the nameserver of
-- /etc/resolv.conf even when unbound is told to read /etc/hosts. mod_s2s builds its connection
-- target with `require "net.resolvers.service".new(domain, "xmpp-server", ...)` when a stanza
-- needs a new outgoing connection, so replacing new() on that shared module table reroutes it.
--
--   s2s_fixed_routes = { ["remote.test"] = { "127.0.0.3", 15269 }; ["conference.remote.test"] = { ... } }
--
-- A domain with a route gets exactly that IPv4 target; any other lookup (another domain, the
-- direct-TLS "xmpps-server" service tried first when s2s TLS is possible, a host name handed to
-- the basic A/AAAA resolver) gets no target at all, so mod_s2s bounces the stanzas with
-- remote-server-not-found instead of asking a nameserver. Load it on the VirtualHost
-- (modules_enabled, with plugin_paths pointing here): the patch is process-wide, so it covers the
-- connections of the host's components too.
local service = require "net.resolvers.service";
local basic = require "net.resolvers.basic";
local manual = require "net.resolvers.manual";
local inet_pton = require "util.net".pton;

local routes = module:get_option("s2s_fixed_routes", {});

-- A resolver with no targets, carrying the reason Prosody logs when the connection fails.
local function refused(why)
	local r = manual.new({}, "tcp");
	r.last_error = why;
	r.hostname = why; -- net.connect prints target_resolver.hostname in its debug lines
	return r;
end

local orig_service_new, orig_basic_new = service.new, basic.new;

local function routed_service_new(hostname, svc, conn_type, extra)
	local route = routes[hostname];
	if svc ~= "xmpp-server" or type(route) ~= "table" then
		module:log("debug", "no fixed route for %s (%s): refusing it", tostring(hostname), tostring(svc));
		return refused("no fixed s2s route for " .. tostring(hostname) .. " (" .. tostring(svc) .. ")");
	end
	local ip, port = route[1], tonumber(route[2]);
	module:log("debug", "fixed route %s -> %s:%d", hostname, ip, port);
	local r = manual.new({ { (conn_type or "tcp") .. "4", ip, port, extra } }, conn_type);
	r.hostname = hostname;
	return r;
end

-- Addresses pass (that is what a route resolves to); names would go to the nameserver.
local function ip_only_basic_new(hostname, port, conn_type, extra)
	if inet_pton(hostname) then
		return orig_basic_new(hostname, port, conn_type, extra);
	end
	return refused("name lookups are off in the test harness: " .. tostring(hostname));
end

for domain, route in pairs(routes) do
	if type(route) ~= "table" or not inet_pton(tostring(route[1])) or not tonumber(route[2]) then
		error("s2s_fixed_routes[" .. tostring(domain) .. "] must be { \"<ipv4>\", <port> }");
	end
end

service.new, basic.new = routed_service_new, ip_only_basic_new;
module:log("info", "fixed s2s routes active, DNS lookups refused");

function module.unload()
	-- Only undo our own patch (a reload installs a fresh one first).
	if service.new == routed_service_new then service.new = orig_service_new; end
	if basic.new == ip_only_basic_new then basic.new = orig_basic_new; end
end
