# Outbound requests (input.http). The proxy has already lowercased and IDNA-encoded the host,
# resolved it (input.http.ips) and classified the addresses (input.http.ip_class: the most
# sensitive class among them; absent when nothing was resolved yet).
#
# Rule ids:
#   network.no_host          deny  the request names no destination host (fail closed)
#   network.scheme           deny  a scheme other than http, https, ws, wss ("" is CONNECT)
#   network.metadata         deny  a cloud metadata service (by address class or by name),
#                                  unless every address is listed exactly in allow_cidrs
#   network.private_address  deny  loopback, private, link-local, CGNAT, unspecified, multicast,
#                                  documentation, reserved (any class but public), or a local
#                                  name such as localhost, unless every address is in allow_cidrs
#   network.ip_literal       deny  the host was written as an IP address, unless every address
#                                  is in allow_cidrs
# Public names that are not allowlisted are allowed here; the allowlist matters to the flow
# rules (exfiltration after a secret or untrusted content was seen).
#
# Exported for other packages: allowlisted, host_allowlisted, ips_allowlisted, host.
package portcullis.network

import rego.v1

pk := data.pack.network

# Always defined while there is an http facet, so that messages never go undefined.
host := trim_suffix(lower(object.get(input.http, "host", "")), ".")

ips := object.get(input.http, "ips", [])

allow_hosts := data.config.allow_hosts if {
	is_array(data.config.allow_hosts)
} else := []

allow_cidrs := data.config.allow_cidrs if {
	is_array(data.config.allow_cidrs)
} else := []

# === allowlists ===

# Exact names, and "*.example.com" for every name below example.com (not example.com itself,
# not evilexample.com): the candidates "*" + every tail of the host that starts at a ".", so the
# cost grows with the labels of the host, not with the length of the allowlist.
host_allowlisted if host in allow_hosts

host_allowlisted if {
	some i in indexof_n(host, ".")
	concat("", ["*", substring(host, i, -1)]) in allow_hosts
}

# A bare address in allow_cidrs means that one address (/32 or /128).
cidrs := [as_cidr(c) | some c in allow_cidrs]

as_cidr(c) := c if {
	contains(c, "/")
} else := concat("", [c, "/128"]) if {
	contains(c, ":")
} else := concat("", [c, "/32"])

ips_allowlisted if {
	count(ips) > 0
	count(cidrs) > 0
	not some_ip_not_allowed
}

some_ip_not_allowed if {
	some ip in ips
	not ip_allowed(ip)
}

ip_allowed(ip) if {
	some c in cidrs
	net.cidr_contains(c, ip)
}

allowlisted if host_allowlisted

allowlisted if ips_allowlisted

# === rules ===

deny contains r if {
	input.http
	host == ""
	r := {"rule": "network.no_host", "message": "the request names no destination host; nothing can be checked, so it is denied"}
}

deny contains r if {
	input.http
	not lower(object.get(input.http, "scheme", "")) in pk.allowed_schemes
	r := {
		"rule": "network.scheme",
		"message": sprintf("the %s scheme to %s is denied: only http, https, ws and wss (and CONNECT) are proxied", [object.get(input.http, "scheme", ""), host]),
	}
}

# The common case — a name (not an address) that resolved to public addresses only, and that
# names no metadata service or local host — skips the address rules in one step.
deny contains r if {
	not plain_public
	some r in address_denials
}

plain_public if {
	input.http.ip_class == "public"
	input.http.ip_literal == false
	not host in pk.metadata_hosts
	not local_name
}

# Metadata services hand out cloud credentials, so a broad allow_cidrs entry (169.254.0.0/16 for
# a device network, 0.0.0.0/0) or an allowlisted name that resolves there (DNS rebinding) must
# not open them by accident: only listing the exact address does.
address_denials contains r if {
	input.http.ip_class == "metadata"
	not metadata_opened
	r := {
		"rule": "network.metadata",
		"message": sprintf("the request to %s (%s) is denied: it is a cloud metadata service, which hands out credentials", [host, concat(", ", ips)]),
	}
}

address_denials contains r if {
	input.http
	host in pk.metadata_hosts
	not metadata_opened
	r := {
		"rule": "network.metadata",
		"message": sprintf("the request to %s is denied: it names a cloud metadata service, which hands out credentials", [host]),
	}
}

metadata_opened if {
	count(ips) > 0
	not some_ip_not_exact
}

some_ip_not_exact if {
	some ip in ips
	not ip_exact(ip)
}

ip_exact(ip) if ip in allow_cidrs

ip_exact(ip) if concat("", [ip, "/32"]) in allow_cidrs

ip_exact(ip) if concat("", [ip, "/128"]) in allow_cidrs

# Any class but public (and metadata, above) — also one this pack does not know yet.
address_denials contains r if {
	is_string(input.http.ip_class)
	c := input.http.ip_class
	c != "public"
	c != "metadata"
	not ips_allowlisted
	r := {
		"rule": "network.private_address",
		"message": sprintf("the request to %s (%s) is denied: the address is %s, not public; list it in network.allow_cidrs to allow it", [host, concat(", ", ips), c]),
	}
}

address_denials contains r if {
	input.http
	local_name
	not ips_allowlisted
	r := {
		"rule": "network.private_address",
		"message": sprintf("the request to %s is denied: it names this machine; list its address in network.allow_cidrs to allow it", [host]),
	}
}

local_name if host in pk.local_hostnames

local_name if strings.any_suffix_match(host, pk.local_suffixes)

address_denials contains r if {
	input.http.ip_literal == true
	not ips_allowlisted
	r := {
		"rule": "network.ip_literal",
		"message": sprintf("the request to the IP address %s is denied: addresses bypass the host allowlist; list it in network.allow_cidrs to allow it", [host]),
	}
}

# === sets this package declares empty ===
# So every package has deny, ask, labels and redact. To add rules to one of them, replace its
# line with `… contains …` rules (keeping both is a load error, never a silent skip).

# No ask rules: every network check is a hard deny.
ask := set()

# No labels rules: nothing learnt from a request alone.
labels := set()

# No redact rules: nothing here is masked.
redact := set()
